//! URL sources: `deploy`/`verify` of an `http://` or `https://` capsule.
//!
//! The archive and whichever of its signatures exist (the same URL plus
//! `.minisig`, `.cosign.sig`, `.sigstore.json`) are downloaded into a private
//! folder (mode 0700) under `<state_dir>/downloads/`, then handled exactly like
//! a local file: nothing here decides trust, `verify` does. What must always
//! hold: no download grows past `deploy.fetch_max_size` (counted while
//! streaming; Content-Length is not believed), none runs past
//! `deploy.fetch_timeout`, the bearer token of `deploy.token_file` is sent only
//! to the origin (scheme, host, port) of the URL asked for and never logged,
//! and the folder is removed when the [`Downloaded`] is dropped, also on error.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ureq::http::Uri;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::config::Settings;
use crate::verify::Refused;

/// Signature files fetched beside the archive, in this order. Only a missing
/// archive is an error here; a missing signature is for `verify` to judge
/// against the host policy.
pub const SIGNATURE_SUFFIXES: [&str; 3] =
    [capsule::MINISIG_SUFFIX, ".cosign.sig", ".sigstore.json"];

/// Signature files are small; a bigger one is an attack or a mistake.
const MAX_SIGNATURE_SIZE: u64 = 1 << 20;

/// Redirects followed per file.
const MAX_REDIRECTS: usize = 5;

/// True when `source` names a URL rather than a local file.
pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// Why a download failed. Each variant names the URL; none holds the token.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("fetch {url}: the server answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("fetch {url}: not finished within deploy.fetch_timeout ({limit:?}): {cause}")]
    Timeout {
        url: String,
        limit: Duration,
        cause: String,
    },
    #[error("fetch {url}: TLS: {cause}{hint}")]
    Tls {
        url: String,
        cause: String,
        hint: &'static str,
    },
    #[error("fetch {url}: {cause}")]
    Transfer { url: String, cause: String },
    #[error("fetch {url}: redirect refused: {why}")]
    Redirect { url: String, why: String },
}

/// A downloaded capsule: the archive and its signatures side by side in a
/// private folder that is removed on drop.
#[derive(Debug)]
pub struct Downloaded {
    // Dropping the TempDir removes the folder and everything in it.
    dir: tempfile::TempDir,
    archive: PathBuf,
    url: String,
}

impl Downloaded {
    /// The local archive; its signatures are beside it with their suffixes.
    pub fn archive(&self) -> &Path {
        &self.archive
    }

    /// The URL it came from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The private folder holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Downloads `url` and its signatures; see the module docs.
pub fn fetch(settings: &Settings, url: &str) -> Result<Downloaded> {
    let origin = origin_of(url)?;
    let token = read_token(settings)?;
    let agent = agent(settings)?;

    let downloads = settings.raw.state_dir.join("downloads");
    fs::create_dir_all(&downloads)
        .with_context(|| format!("create download folder {}", downloads.display()))?;
    fs::set_permissions(&downloads, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", downloads.display()))?;
    // tempfile creates the folder with mode 0700 under a random name.
    let dir = tempfile::Builder::new()
        .prefix("fetch-")
        .tempdir_in(&downloads)
        .with_context(|| format!("create a private folder in {}", downloads.display()))?;
    let archive = dir.path().join(local_name(url));

    let started = Instant::now();
    let client = Client {
        agent: &agent,
        origin: &origin,
        token: token.as_deref(),
        timeout: settings.fetch_timeout,
    };
    let got = client.get_to_file(url, &archive, settings.fetch_max_size)?;
    let size = got.ok_or_else(|| FetchError::Status {
        url: url.to_owned(),
        status: 404,
    })?;
    let mut signatures = Vec::new();
    for suffix in SIGNATURE_SUFFIXES {
        let sig_url = with_suffix(url, suffix);
        let local = PathBuf::from(format!("{}{suffix}", archive.display()));
        let limit = MAX_SIGNATURE_SIZE.min(settings.fetch_max_size);
        if client.get_to_file(&sig_url, &local, limit)?.is_some() {
            signatures.push(suffix);
        }
    }
    tracing::info!(
        url,
        bytes = size,
        ?signatures,
        took_ms = started.elapsed().as_millis() as u64,
        "capsule downloaded"
    );
    Ok(Downloaded {
        dir,
        archive,
        url: url.to_owned(),
    })
}

struct Client<'a> {
    agent: &'a ureq::Agent,
    origin: &'a Origin,
    token: Option<&'a str>,
    timeout: Duration,
}

impl Client<'_> {
    /// GETs `url` into `path` (created new, mode 0600), following up to
    /// [`MAX_REDIRECTS`] redirects. `Ok(None)` for 404/410: the file does
    /// not exist there. Stops and removes the partial file past `limit` bytes.
    fn get_to_file(&self, url: &str, path: &Path, limit: u64) -> Result<Option<u64>> {
        let mut at = url.to_owned();
        let mut redirects = 0;
        let resp = loop {
            let mut req = self.agent.get(&at);
            // The token goes only to the origin that was asked for: a
            // redirect elsewhere (another host, port or scheme) must not
            // carry it.
            if let Some(t) = self.token
                && origin_of(&at).ok().as_ref() == Some(self.origin)
            {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            let resp = req.call().map_err(|e| self.classify(url, e))?;
            let status = resp.status().as_u16();
            if !(300..400).contains(&status) || status == 304 {
                break resp;
            }
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(FetchError::Redirect {
                    url: url.to_owned(),
                    why: format!("more than {MAX_REDIRECTS} redirects"),
                }
                .into());
            }
            let next = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| FetchError::Redirect {
                    url: url.to_owned(),
                    why: format!("HTTP {status} without a Location"),
                })?;
            let next = resolve(&at, next).map_err(|why| FetchError::Redirect {
                url: url.to_owned(),
                why,
            })?;
            if at.starts_with("https://") && !next.starts_with("https://") {
                return Err(FetchError::Redirect {
                    url: url.to_owned(),
                    why: format!("from https to {next}"),
                }
                .into());
            }
            tracing::debug!(from = %at, to = %next, status, "following a redirect");
            at = next;
        };
        let status = resp.status().as_u16();
        if status == 404 || status == 410 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status,
            }
            .into());
        }

        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("fetch {url}: create {}", path.display()))?;
        let mut reader = resp.into_body().into_reader();
        match copy_capped(&mut reader, &mut file, limit) {
            Ok(n) => Ok(Some(n)),
            Err(e) => {
                drop(file);
                // The folder goes with the Downloaded's TempDir anyway; removing
                // the file now keeps a partial download from being read.
                let _ = fs::remove_file(path);
                Err(match e {
                    Copy::TooLarge => Refused::Other(format!(
                        "fetch {url}: larger than deploy.fetch_max_size ({limit} bytes); \
                         download stopped and removed"
                    ))
                    .into(),
                    Copy::Read(e) => self.classify(url, ureq::Error::from(e)).into(),
                    Copy::Write(e) => {
                        anyhow::anyhow!("fetch {url}: write {}: {e}", path.display())
                    }
                })
            }
        }
    }

    fn classify(&self, url: &str, e: ureq::Error) -> FetchError {
        let url = url.to_owned();
        match e {
            ureq::Error::Timeout(t) => FetchError::Timeout {
                url,
                limit: self.timeout,
                cause: t.to_string(),
            },
            ureq::Error::Tls(m) => FetchError::Tls {
                url,
                cause: m.to_owned(),
                hint: "",
            },
            ureq::Error::Rustls(r) => tls_error(url, &r),
            ureq::Error::Io(io) => {
                if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    return tls_error(url, r);
                }
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) {
                    return FetchError::Timeout {
                        url,
                        limit: self.timeout,
                        cause: io.to_string(),
                    };
                }
                FetchError::Transfer {
                    url,
                    cause: io.to_string(),
                }
            }
            other => FetchError::Transfer {
                url,
                cause: other.to_string(),
            },
        }
    }
}

fn tls_error(url: String, r: &rustls::Error) -> FetchError {
    let hint = match r {
        rustls::Error::InvalidCertificate(_) => {
            " (a private CA? set deploy.ca_bundle to its PEM file)"
        }
        _ => "",
    };
    FetchError::Tls {
        url,
        cause: r.to_string(),
        hint,
    }
}

enum Copy {
    TooLarge,
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Copies at most `limit` bytes; one byte more is an error.
fn copy_capped(r: &mut impl Read, w: &mut File, limit: u64) -> Result<u64, Copy> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        total += n as u64;
        if total > limit {
            return Err(Copy::TooLarge);
        }
        w.write_all(&buf[..n]).map_err(Copy::Write)?;
    }
}

fn agent(settings: &Settings) -> Result<ureq::Agent> {
    let mut tls = TlsConfig::builder();
    if let Some(bundle) = &settings.raw.ca_bundle {
        // Extra CAs: the bundle's certificates are trusted besides the
        // Mozilla roots ureq trusts by default.
        let pem = fs::read(bundle)
            .with_context(|| format!("read deploy.ca_bundle {}", bundle.display()))?;
        let mut roots: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let before = roots.len();
        for item in ureq::tls::parse_pem(&pem) {
            // A key in a CA bundle is odd but harmless; it is not trusted.
            let item = item.with_context(|| format!("deploy.ca_bundle {}", bundle.display()))?;
            if let PemItem::Certificate(c) = item {
                roots.push(c.to_owned());
            }
        }
        if roots.len() == before {
            anyhow::bail!(
                "deploy.ca_bundle {}: no PEM certificate in it",
                bundle.display()
            );
        }
        tls = tls.root_certs(RootCerts::Specific(Arc::new(roots)));
    }
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // Redirects are followed by hand so the token stays on its origin.
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(settings.fetch_timeout))
        .user_agent(concat!("dickbox-deploy/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls.build())
        .build();
    Ok(config.new_agent())
}

fn read_token(settings: &Settings) -> Result<Option<String>> {
    let Some(path) = &settings.raw.token_file else {
        return Ok(None);
    };
    let text = fs::read_to_string(path)
        .with_context(|| format!("read deploy.token_file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || token.contains(['\r', '\n']) {
        anyhow::bail!(
            "deploy.token_file {}: must hold one non-empty line (the bearer token)",
            path.display()
        );
    }
    Ok(Some(token.to_owned()))
}

/// Scheme, host and port of a URL: where the token may go.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

fn origin_of(url: &str) -> Result<Origin> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{url}: not a valid URL"))?;
    let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => anyhow::bail!("{url}: only http:// and https:// URLs are fetched"),
    };
    let auth = uri
        .authority()
        .with_context(|| format!("{url}: no host in the URL"))?;
    if auth.as_str().contains('@') {
        anyhow::bail!("{url}: credentials in the URL are refused; use deploy.token_file");
    }
    Ok(Origin {
        scheme,
        host: auth.host().to_ascii_lowercase(),
        port: auth.port_u16().unwrap_or(default_port),
    })
}

/// Resolves a Location header against the URL it came from.
fn resolve(base: &str, location: &str) -> Result<String, String> {
    if is_url(location) {
        return Ok(location.to_owned());
    }
    let o = origin_of(base).map_err(|e| e.to_string())?;
    let host = if o.host.contains(':') {
        format!("[{}]", o.host.trim_matches(['[', ']']))
    } else {
        o.host.clone()
    };
    let root = format!("{}://{}:{}", o.scheme, host, o.port);
    if location.starts_with("//") {
        return Ok(format!("{}:{location}", o.scheme));
    }
    if location.starts_with('/') {
        return Ok(format!("{root}{location}"));
    }
    // Relative to the folder of the base path.
    let path = base
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .splitn(4, '/')
        .nth(3)
        .unwrap_or("");
    let folder = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    if folder.is_empty() {
        Ok(format!("{root}/{location}"))
    } else {
        Ok(format!("{root}/{folder}/{location}"))
    }
}

/// The same URL with `suffix` added to its path (before any query).
fn with_suffix(url: &str, suffix: &str) -> String {
    let url = url.split('#').next().unwrap_or(url);
    match url.split_once('?') {
        Some((path, query)) => format!("{path}{suffix}?{query}"),
        None => format!("{url}{suffix}"),
    }
}

/// The local file name: the URL's last path segment when it is a plain name,
/// else a fixed one. It is only a label; verify reads the signed comment.
fn local_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let last = path
        .splitn(4, '/')
        .nth(3)
        .and_then(|p| p.rsplit('/').next())
        .unwrap_or("");
    let plain = !last.is_empty()
        && !last.starts_with('.')
        && last.len() <= 200
        && last
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if plain {
        last.to_owned()
    } else {
        "capsule.tar.zst".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_urls_keep_the_query_after_the_suffix() {
        let cases = [
            ("http://h/a/x.tar.zst", "http://h/a/x.tar.zst.minisig"),
            ("http://h/x.tar.zst?v=1", "http://h/x.tar.zst.minisig?v=1"),
            ("http://h/x.tar.zst#frag", "http://h/x.tar.zst.minisig"),
        ];
        for (url, want) in cases {
            assert_eq!(with_suffix(url, ".minisig"), want, "{url}");
        }
    }

    #[test]
    fn local_names_are_plain_or_fixed() {
        let cases = [
            (
                "http://h/a/demo-1.0.0.capsule.tar.zst",
                "demo-1.0.0.capsule.tar.zst",
            ),
            ("http://h/a/..", "capsule.tar.zst"),
            ("http://h/", "capsule.tar.zst"),
            ("http://h", "capsule.tar.zst"),
            ("http://h/a/b%2F..?x=1", "capsule.tar.zst"),
            ("https://h/x.tar.zst?sig=abc", "x.tar.zst"),
        ];
        for (url, want) in cases {
            assert_eq!(local_name(url), want, "{url}");
        }
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let a = origin_of("https://Repo.example:443/x").unwrap();
        assert_eq!(a, origin_of("https://repo.example/y").unwrap());
        assert_ne!(a, origin_of("http://repo.example/y").unwrap());
        assert_ne!(a, origin_of("https://repo.example:8443/y").unwrap());
        assert_ne!(a, origin_of("https://other.example/y").unwrap());
        assert!(origin_of("https://user:pw@repo.example/x").is_err());
        assert!(origin_of("ftp://repo.example/x").is_err());
    }

    #[test]
    fn redirect_locations_resolve_against_their_base() {
        let b = "http://h:8080/a/b/x.tar.zst";
        let cases = [
            ("/c/y", "http://h:8080/c/y"),
            ("y", "http://h:8080/a/b/y"),
            ("//o/z", "http://o/z"),
            ("https://o/z", "https://o/z"),
        ];
        for (loc, want) in cases {
            assert_eq!(resolve(b, loc).unwrap(), want, "{loc}");
        }
    }
}
