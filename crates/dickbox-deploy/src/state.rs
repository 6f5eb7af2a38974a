//! Deploy's state on disk: per-service links, the downgrade floors, the
//! journal of in-flight operations and the history of finished ones.
//!
//! `services/<svc>/current` and `previous` are symlinks to release folders;
//! `services/<svc>/capsule` names the capsule that owns the service. Each is
//! changed only through `fsops` (temp + rename + folder sync).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use capsule::names::{CapsuleName, ReleaseId, ServiceName};
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::fsops::{ensure_dir, read_link, remove_if_exists, switch_link, write_atomic};

pub fn service_dir(s: &Settings, svc: &ServiceName) -> PathBuf {
    s.services_dir().join(svc.as_str())
}

/// The release a service link points at, if any.
pub fn link_release(s: &Settings, svc: &ServiceName, which: &str) -> Option<ReleaseId> {
    let target = read_link(&service_dir(s, svc).join(which))?;
    let name = target.file_name()?.to_str()?;
    ReleaseId::parse(name).ok()
}

pub fn current(s: &Settings, svc: &ServiceName) -> Option<ReleaseId> {
    link_release(s, svc, "current")
}

pub fn previous(s: &Settings, svc: &ServiceName) -> Option<ReleaseId> {
    link_release(s, svc, "previous")
}

pub fn set_link(
    s: &Settings,
    svc: &ServiceName,
    which: &str,
    id: Option<&ReleaseId>,
) -> Result<()> {
    let dir = service_dir(s, svc);
    ensure_dir(&dir, 0o755)?;
    match id {
        Some(id) => switch_link(&dir.join(which), &s.releases_dir().join(id.as_str())),
        None => remove_if_exists(&dir.join(which)).map(|_| ()),
    }
}

/// Points `<runtime>/<svc>/current.sock` at the instance socket of `id`.
pub fn set_front(s: &Settings, svc: &ServiceName, id: &ReleaseId) -> Result<()> {
    let dir = s.raw.runtime_dir.join(svc.as_str());
    ensure_dir(&dir, 0o755)?;
    switch_link(&dir.join("current.sock"), Path::new(&format!("{id}.sock")))
}

pub fn owner(s: &Settings, svc: &ServiceName) -> Option<CapsuleName> {
    let text = fs::read_to_string(service_dir(s, svc).join("capsule")).ok()?;
    CapsuleName::parse(text.trim()).ok()
}

pub fn set_owner(s: &Settings, svc: &ServiceName, capsule: &CapsuleName) -> Result<()> {
    let dir = service_dir(s, svc);
    ensure_dir(&dir, 0o755)?;
    write_atomic(
        &dir.join("capsule"),
        format!("{capsule}\n").as_bytes(),
        0o644,
    )
}

/// Every service deploy knows, sorted.
pub fn services(s: &Settings) -> Vec<ServiceName> {
    let mut v: Vec<ServiceName> = fs::read_dir(s.services_dir())
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| ServiceName::parse(&e.file_name().to_string_lossy()).ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Blue/green port per release of a `listen: tcp` service.
pub fn ports(s: &Settings, svc: &ServiceName) -> BTreeMap<String, u16> {
    fs::read(service_dir(s, svc).join("ports.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn set_ports(s: &Settings, svc: &ServiceName, map: &BTreeMap<String, u16>) -> Result<()> {
    let dir = service_dir(s, svc);
    ensure_dir(&dir, 0o755)?;
    write_atomic(
        &dir.join("ports.json"),
        &serde_json::to_vec_pretty(map)?,
        0o644,
    )
}

/// The highest version deployed per capsule name.
pub fn floors(s: &Settings) -> Result<BTreeMap<String, semver::Version>> {
    match fs::read(s.floors_path()) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{} is damaged: fix or remove it", s.floors_path().display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("read {}", s.floors_path().display())),
    }
}

pub fn raise_floor(s: &Settings, capsule: &CapsuleName, v: &semver::Version) -> Result<()> {
    let mut f = floors(s)?;
    let raise = f.get(capsule.as_str()).is_none_or(|old| v > old);
    if raise {
        f.insert(capsule.to_string(), v.clone());
        ensure_dir(&s.raw.state_dir, 0o755)?;
        write_atomic(&s.floors_path(), &serde_json::to_vec_pretty(&f)?, 0o644)?;
    }
    Ok(())
}

/// One in-flight operation, written before each step is taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalRecord {
    pub tx: String,
    /// `deploy`, `rollback` or `remove`.
    pub op: String,
    pub capsule: String,
    /// The release being switched to (deploy, rollback).
    pub new: Option<String>,
    pub services: Vec<JournalService>,
    pub step: Step,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalService {
    pub name: String,
    pub old_current: Option<String>,
    pub old_previous: Option<String>,
}

/// The steps of a switch, in order. Before `Switching`, a crash is undone;
/// from `Switched` on, it is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Begin,
    UnitsWritten,
    Starting,
    Healthy,
    Switching,
    Switched,
    OldStopped,
}

impl JournalRecord {
    pub fn path(&self, s: &Settings) -> PathBuf {
        s.journal_dir().join(format!("{}.json", self.tx))
    }

    /// Records the step about to be taken.
    pub fn write(&mut self, s: &Settings, step: Step) -> Result<()> {
        self.step = step;
        ensure_dir(&s.journal_dir(), 0o755)?;
        write_atomic(&self.path(s), &serde_json::to_vec_pretty(self)?, 0o644)?;
        crate::crash_point(&format!("{}-{}", self.op, step_name(step)));
        Ok(())
    }

    pub fn finish(&self, s: &Settings) -> Result<()> {
        remove_if_exists(&self.path(s))?;
        crate::fsops::sync_dir(&s.journal_dir())
    }
}

pub fn step_name(step: Step) -> &'static str {
    match step {
        Step::Begin => "begin",
        Step::UnitsWritten => "units-written",
        Step::Starting => "starting",
        Step::Healthy => "healthy",
        Step::Switching => "switching",
        Step::Switched => "switched",
        Step::OldStopped => "old-stopped",
    }
}

pub fn journal_records(s: &Settings) -> Vec<(PathBuf, Result<JournalRecord>)> {
    let mut v: Vec<_> = fs::read_dir(s.journal_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.into_iter()
        .map(|p| {
            let r = fs::read(&p)
                .map_err(anyhow::Error::from)
                .and_then(|b| serde_json::from_slice(&b).map_err(anyhow::Error::from));
            (p, r)
        })
        .collect()
}

/// Appends one line to the history of finished operations.
pub fn record_history(s: &Settings, entry: &serde_json::Value) {
    use std::io::Write;
    let line = format!("{entry}\n");
    let res = ensure_dir(&s.raw.state_dir, 0o755).and_then(|_| {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.history_path())?;
        f.write_all(line.as_bytes())?;
        f.sync_data()?;
        Ok(())
    });
    if let Err(e) = res {
        // The history is for people; losing a line must not fail a deploy.
        tracing::warn!(error = %e, "could not append to the deploy history");
    }
}
