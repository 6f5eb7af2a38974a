//! The key store of one host: per identity, CURVE certificates of every kept
//! generation, the `current` and `previous` links, the `clients/` folder of
//! accepted client keys, the signed rotation events, and `generations.json`,
//! the index this tool writes.
//!
//! Layout under `keys_dir` (DESIGN.md):
//!
//! ```text
//! events.key, events.pub            minisign key pair that signs rotation events
//! .rotate.lock                      one rotation at a time
//! <identity>/                       0750, group `key_group`
//!   <identity>-<gen>.key            public certificate (zcert), 0644
//!   <identity>-<gen>.key_secret     secret certificate (zcert), 0600
//!   current, previous               links to the public certificates
//!   clients/                        public certificates of accepted clients
//!   events/<gen>.json[.minisig]     the rotation event and its signature
//!   generations.json                the index: what this tool wrote, and when
//! ```
//!
//! Invariants: the index lists every generation this tool wrote; pruning and
//! listing go by the index only, never by parsing file names found on disk;
//! `current` and `previous` are never pruned; links only ever point at
//! public certificates named in the index.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic;
use crate::cert::{self, Cert, Part};

/// A validated identity name: `[a-z0-9][a-z0-9-]*`, at most 64 characters.
/// It is used verbatim in folder and file names, so nothing else can pass.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity(String);

#[derive(Debug, thiserror::Error)]
#[error("identity {0:?} is not valid: use [a-z0-9][a-z0-9-]*, at most 64 characters")]
pub struct BadIdentity(String);

impl Identity {
    pub fn parse(text: &str) -> Result<Self, BadIdentity> {
        let mut chars = text.chars();
        let ok = text.len() <= 64
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(text.to_string()))
        } else {
            Err(BadIdentity(text.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One generation as recorded in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub generation: u64,
    /// Unix seconds.
    pub created: u64,
    pub public_key: String,
    pub public_file: String,
    pub secret_file: String,
    /// Set when the generation stopped being current: until then clients may
    /// still use it (unix seconds).
    #[serde(default)]
    pub grace_until: Option<u64>,
}

/// `generations.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub format: u32,
    pub identity: String,
    pub generations: Vec<Generation>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("index {path} is damaged: {message}")]
    Index { path: PathBuf, message: String },
    #[error("certificate {path}: {source}")]
    Cert {
        path: PathBuf,
        source: cert::CertError,
    },
    #[error("link {path} points at {target:?}, which is not a generation this tool wrote")]
    ForeignLink { path: PathBuf, target: String },
    #[error("certificate {path} holds public key {found}, but the index records {recorded}")]
    KeyMismatch {
        path: PathBuf,
        found: String,
        recorded: String,
    },
    #[error("{path} is not a symlink (it must link to a public certificate of the index)")]
    NotLink { path: PathBuf },
    #[error("no key for identity {identity} in {dir}: run `zmq-key-rotate rotate` first")]
    NoCurrent { identity: Identity, dir: PathBuf },
    #[error("group {group:?} for {path}: {message}")]
    Group {
        group: String,
        path: PathBuf,
        message: String,
    },
}

/// The key store rooted at `keys_dir`.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Which link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Current,
    Previous,
}

impl Link {
    fn name(self) -> &'static str {
        match self {
            Link::Current => "current",
            Link::Previous => "previous",
        }
    }
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn identity_dir(&self, id: &Identity) -> PathBuf {
        self.root.join(id.as_str())
    }

    pub fn clients_dir(&self, id: &Identity) -> PathBuf {
        self.identity_dir(id).join("clients")
    }

    pub fn events_dir(&self, id: &Identity) -> PathBuf {
        self.identity_dir(id).join("events")
    }

    pub fn index_path(&self, id: &Identity) -> PathBuf {
        self.identity_dir(id).join("generations.json")
    }

    pub fn event_paths(&self, id: &Identity, generation: u64) -> (PathBuf, PathBuf) {
        let dir = self.events_dir(id);
        (
            dir.join(format!("{generation}.json")),
            dir.join(format!("{generation}.json.minisig")),
        )
    }

    /// Reads the index; a missing index is an empty one.
    pub fn index(&self, id: &Identity) -> Result<Index, StoreError> {
        let path = self.index_path(id);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Index {
                    format: 1,
                    identity: id.to_string(),
                    generations: Vec::new(),
                });
            }
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let index: Index = serde_json::from_str(&text).map_err(|e| StoreError::Index {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if index.format != 1 || index.identity != id.as_str() {
            return Err(StoreError::Index {
                path,
                message: format!(
                    "format {} identity {:?}; expected format 1 identity {:?}",
                    index.format,
                    index.identity,
                    id.as_str()
                ),
            });
        }
        check_entries(&path, id, &index)?;
        Ok(index)
    }

    pub fn write_index(&self, id: &Identity, index: &Index) -> Result<(), StoreError> {
        let path = self.index_path(id);
        let mut text = serde_json::to_string_pretty(index).map_err(|e| StoreError::Index {
            path: path.clone(),
            message: e.to_string(),
        })?;
        text.push('\n');
        atomic::write_file(&path, text.as_bytes(), 0o644)
            .map_err(|source| StoreError::Write { path, source })
    }

    /// The generation a link points at, checked against the index.
    pub fn linked(
        &self,
        id: &Identity,
        link: Link,
        index: &Index,
    ) -> Result<Option<u64>, StoreError> {
        let path = self.identity_dir(id).join(link.name());
        let target = match fs::read_link(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                return Err(StoreError::NotLink { path });
            }
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let target = target.to_string_lossy().into_owned();
        index
            .generations
            .iter()
            .find(|g| g.public_file == target)
            .map(|g| Some(g.generation))
            .ok_or(StoreError::ForeignLink { path, target })
    }

    pub fn switch(
        &self,
        id: &Identity,
        link: Link,
        generation: &Generation,
    ) -> Result<(), StoreError> {
        let path = self.identity_dir(id).join(link.name());
        atomic::switch_link(&path, Path::new(&generation.public_file))
            .map_err(|source| StoreError::Write { path, source })
    }

    /// Loads the secret certificate of a generation and checks that it holds
    /// the public key the index recorded.
    pub fn load_secret(&self, id: &Identity, generation: &Generation) -> Result<Cert, StoreError> {
        let path = self.identity_dir(id).join(&generation.secret_file);
        let cert = read_cert(&path)?;
        if cert.public.to_z85() != generation.public_key || cert.secret.is_none() {
            return Err(StoreError::KeyMismatch {
                path,
                found: cert.public.to_z85(),
                recorded: generation.public_key.clone(),
            });
        }
        Ok(cert)
    }

    /// What is wrong with a generation's files, one sentence each (empty
    /// when both load, hold the recorded key, and the secret is private).
    pub fn generation_problems(&self, id: &Identity, generation: &Generation) -> Vec<String> {
        let mut out = Vec::new();
        let public = self.identity_dir(id).join(&generation.public_file);
        match read_cert(&public) {
            Err(e) => out.push(e.to_string()),
            Ok(c) if c.public.to_z85() != generation.public_key => out.push(
                StoreError::KeyMismatch {
                    path: public,
                    found: c.public.to_z85(),
                    recorded: generation.public_key.clone(),
                }
                .to_string(),
            ),
            Ok(_) => {}
        }
        if let Err(e) = self.load_secret(id, generation) {
            out.push(e.to_string());
        }
        let secret = self.identity_dir(id).join(&generation.secret_file);
        if let Some(p) = open_mode_problem(&secret, 0o004, "readable") {
            out.push(p);
        }
        out
    }

    /// Permissions the bus refuses to start with: the identity folder or
    /// `clients/` writable by others (anyone could add an allowed client or
    /// swap a key), or a secret certificate in the identity folder readable by
    /// others.
    pub fn permission_problems(&self, id: &Identity) -> Vec<String> {
        let dir = self.identity_dir(id);
        let mut out: Vec<String> = [dir.clone(), self.clients_dir(id)]
            .iter()
            .filter_map(|d| open_mode_problem(d, 0o002, "writable"))
            .collect();
        if let Ok(entries) = fs::read_dir(&dir) {
            let mut secrets: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with("_secret"))
                .collect();
            secrets.sort();
            out.extend(
                secrets
                    .iter()
                    .filter_map(|p| open_mode_problem(p, 0o004, "readable")),
            );
        }
        out
    }

    /// Creates the identity's folders with their modes (and group when root).
    pub fn prepare(&self, id: &Identity, group: Option<&str>) -> Result<(), StoreError> {
        let dir = self.identity_dir(id);
        // Only root can hand a folder to another group; an unprivileged run (a
        // test, or an operator trying things out) keeps its own group. The
        // group is looked up before anything is created.
        let gid = match group {
            Some(group) if rustix::process::geteuid().is_root() => {
                Some(lookup_group(group).map_err(|message| StoreError::Group {
                    group: group.to_string(),
                    path: dir.clone(),
                    message,
                })?)
            }
            _ => None,
        };
        make_dir(&self.root, 0o755, None)?;
        make_dir(&dir, 0o750, gid)?;
        make_dir(&self.clients_dir(id), 0o750, gid)?;
        make_dir(&self.events_dir(id), 0o755, None)?;
        Ok(())
    }

    /// Writes both files of a new certificate: the secret first (0600), then
    /// the public one, each atomically.
    pub fn write_cert(
        &self,
        id: &Identity,
        generation: &Generation,
        cert: &Cert,
    ) -> Result<(), StoreError> {
        let dir = self.identity_dir(id);
        for (part, file, mode) in [
            (Part::Secret, &generation.secret_file, 0o600),
            (Part::Public, &generation.public_file, 0o644),
        ] {
            let path = dir.join(file);
            let text = cert::render(cert, part).map_err(|source| StoreError::Cert {
                path: path.clone(),
                source,
            })?;
            atomic::write_file(&path, text.as_bytes(), mode)
                .map_err(|source| StoreError::Write { path, source })?;
        }
        Ok(())
    }

    /// Deletes a generation's files (not its index record). Missing files are
    /// fine: a crash may have deleted them already.
    pub fn delete_files(&self, id: &Identity, generation: &Generation) -> Result<(), StoreError> {
        let dir = self.identity_dir(id);
        let (event, sig) = self.event_paths(id, generation.generation);
        for path in [
            dir.join(&generation.secret_file),
            dir.join(&generation.public_file),
            event,
            sig,
        ] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StoreError::Write { path, source: e });
                }
                _ => {}
            }
        }
        atomic::sync_dir(&dir).map_err(|source| StoreError::Write { path: dir, source })
    }

    /// Public keys of the clients a server of `id` accepts: every `*.key` file
    /// in `clients/` (secret certificates there are ignored, never read),
    /// with the files that could not be read, path and error.
    pub fn client_keys(&self, id: &Identity) -> Result<ClientKeys, StoreError> {
        let dir = self.clients_dir(id);
        let entries =
            fs::read_dir(&dir).map_err(|source| StoreError::Read { path: dir, source })?;
        let mut out = ClientKeys::default();
        for entry in entries.flatten() {
            let path = entry.path();
            let is_public = path.extension().is_some_and(|e| e == "key");
            if !is_public {
                continue;
            }
            match read_cert(&path) {
                Ok(c) => out.keys.push((path, *c.public.as_bytes())),
                Err(e) => out.unreadable.push((path, e)),
            }
        }
        Ok(out)
    }
}

/// What `clients/` holds.
#[derive(Debug, Default)]
pub struct ClientKeys {
    pub keys: Vec<(PathBuf, [u8; 32])>,
    pub unreadable: Vec<(PathBuf, StoreError)>,
}

/// Refuses index entries whose file names are not exactly the ones this tool
/// writes (`<identity>-<generation>.key` and `.key_secret`), and generation
/// numbers listed twice. Every path the tool derives from the index (files it
/// reads, links it points, files it deletes) goes through these names, so an
/// edited index can never make it touch anything outside the identity folder.
fn check_entries(path: &Path, id: &Identity, index: &Index) -> Result<(), StoreError> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, g) in index.generations.iter().enumerate() {
        let public = format!("{id}-{}.key", g.generation);
        let secret = format!("{id}-{}.key_secret", g.generation);
        let message = if g.public_file != public {
            Some(format!(
                "entry {i} (generation {}): public_file {:?} must be {public:?}",
                g.generation, g.public_file
            ))
        } else if g.secret_file != secret {
            Some(format!(
                "entry {i} (generation {}): secret_file {:?} must be {secret:?}",
                g.generation, g.secret_file
            ))
        } else if !seen.insert(g.generation) {
            Some(format!(
                "entry {i}: generation {} is listed twice",
                g.generation
            ))
        } else {
            None
        };
        if let Some(message) = message {
            return Err(StoreError::Index {
                path: path.to_path_buf(),
                message,
            });
        }
    }
    Ok(())
}

/// A sentence when `path` has a permission bit of `others` set.
pub fn open_mode_problem(path: &Path, others: u32, what: &str) -> Option<String> {
    let mode = fs::symlink_metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & others != 0).then(|| {
        format!(
            "{} has mode {mode:04o}: {what} by others (chmod o-rwx)",
            path.display()
        )
    })
}

/// Reads and parses one zcert file.
pub fn read_cert(path: &Path) -> Result<Cert, StoreError> {
    let text = fs::read_to_string(path).map_err(|source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    cert::parse(&text).map_err(|source| StoreError::Cert {
        path: path.to_path_buf(),
        source,
    })
}

fn make_dir(path: &Path, mode: u32, gid: Option<u32>) -> Result<(), StoreError> {
    let write_err = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(write_err(e)),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(write_err)?;
    if let Some(gid) = gid {
        rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid))).map_err(|e| {
            StoreError::Group {
                group: gid.to_string(),
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?;
    }
    Ok(())
}

/// Finds a group id in `/etc/group` (systemd-sysusers creates ours there).
pub fn lookup_group(name: &str) -> Result<u32, String> {
    let text = fs::read_to_string("/etc/group").map_err(|e| format!("read /etc/group: {e}"))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let n = f.next()?;
            let gid = f.nth(1)?.parse().ok()?;
            Some((n, gid))
        })
        .find(|(n, _)| *n == name)
        .map(|(_, gid)| gid)
        .ok_or_else(|| "no such group (install systemd/sysusers.d/dickbox.conf)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_names_are_checked() {
        for ok in ["bus", "web-api", "a", "0x"] {
            assert!(Identity::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Bus", "-a", "a/b", "..", "a.b", "a_b", &"a".repeat(65)] {
            assert!(Identity::parse(bad).is_err(), "{bad}");
        }
    }
}
