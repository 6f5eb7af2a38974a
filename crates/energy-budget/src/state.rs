//! The budget state file and how it reaches the disk.
//!
//! The state holds the period's totals together with the counter readings they
//! were computed up to (the baseline), keyed by boot id, and per GPU by counter
//! epoch. Both are written in one file, in one rename, so after a crash the
//! daemon resumes from a baseline that matches its totals: energy used between
//! the last sync and the restart is the difference of the counters, counted
//! once, never twice and never dropped (as long as the boot is the same).
//!
//! Writes go temp file, fsync, rename the current file to `.bak`, rename the
//! temp over the current file, fsync the folder. A file that does not parse
//! (empty, NUL-filled after a power cut on a file system that lost the data,
//! truncated, edited) is never replaced by a fresh zero budget: loading falls
//! back to `.bak` and sets the bad file aside, or refuses, naming the file.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::PeriodKind;

/// Format number written into every state file.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub format: u32,
    pub period: Period,
    pub totals: Totals,
    /// Warning keys already logged this period (`total:75`, `service:web:90`,
    /// `projection:total`), so each fires once.
    pub warnings_fired: BTreeSet<String>,
    /// Units whose CPUQuota was lowered this period.
    pub enforced: BTreeSet<String>,
    pub baseline: Option<Baseline>,
    pub history: Vec<HourBucket>,
    pub past_periods: Vec<PeriodSummary>,
    pub sources: Sources,
    /// Wall time of the last sync, seconds since the epoch.
    pub last_sync_unix: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Period {
    pub kind: PeriodKind,
    /// Start and end in seconds since the epoch, UTC; end is exclusive.
    pub start: i64,
    pub end: i64,
}

/// Energy of one period, in joules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Measured RAPL package + DRAM energy of the host.
    pub cpu_j: f64,
    /// GPU energy of the host: measured counters plus `gpu_estimated_j`.
    pub gpu_j: f64,
    /// The part of `gpu_j` that came from power × time (GPUs without counter).
    pub gpu_estimated_j: f64,
    /// Configured power profiles used while CPU energy was unavailable.
    pub profile_j: f64,
    pub services: BTreeMap<String, ServiceTotals>,
}

impl Totals {
    /// What counts against the budget.
    pub fn used_j(&self) -> f64 {
        self.cpu_j + self.gpu_j + self.profile_j
    }
}

/// Energy attributed to one service, in joules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTotals {
    /// Share of measured CPU energy by CPU time.
    pub cpu_j: f64,
    /// Share of its GPUs' energy: always an estimate (equal split).
    pub gpu_j: f64,
    /// From a configured power profile: an estimate.
    pub profile_j: f64,
}

impl ServiceTotals {
    pub fn total_j(&self) -> f64 {
        self.cpu_j + self.gpu_j + self.profile_j
    }
    pub fn add(&mut self, o: &ServiceTotals, f: f64) {
        self.cpu_j += o.cpu_j * f;
        self.gpu_j += o.gpu_j * f;
        self.profile_j += o.profile_j * f;
    }
}

/// Counter readings the totals were computed up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// `/proc/sys/kernel/random/boot_id`: counters are only comparable within
    /// one boot.
    pub boot_id: String,
    /// CLOCK_BOOTTIME seconds of the reading: real elapsed time, also across a
    /// daemon restart within the boot.
    pub boottime_s: f64,
    pub unix_s: f64,
    /// RAPL zone → `energy_uj`.
    pub rapl: BTreeMap<String, u64>,
    pub gpus: BTreeMap<String, GpuBaseline>,
    /// cgroup path → usage µs.
    pub cgroups: BTreeMap<String, u64>,
    pub host_busy_usec: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuBaseline {
    pub energy_mj: Option<u64>,
    pub power_mw: Option<u32>,
    /// Counter epoch: incremented when the counter went down (driver reload).
    pub epoch: u32,
}

/// Energy of one hour, for `report --hours`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HourBucket {
    pub start: i64,
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodSummary {
    pub period: Period,
    pub budget_kwh: f64,
    pub totals: Totals,
}

/// How each source did at the last sample, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    pub cpu: String,
    pub gpu: String,
    pub cgroups: String,
}

impl State {
    pub fn new(period: Period) -> Self {
        State {
            format: FORMAT,
            period,
            totals: Totals::default(),
            warnings_fired: BTreeSet::new(),
            enforced: BTreeSet::new(),
            baseline: None,
            history: Vec::new(),
            past_periods: Vec::new(),
            sources: Sources::default(),
            last_sync_unix: 0.0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("read state {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "state {path} is unusable ({reason}) and so is its last good copy {backup} ({backup_reason}); \
         refusing to start with a zero budget: restore one of them or move both away"
    )]
    BothBad {
        path: PathBuf,
        reason: String,
        backup: PathBuf,
        backup_reason: String,
    },
    #[error(
        "state {path} is unusable ({reason}) and there is no last good copy {backup}; \
         refusing to start with a zero budget: restore it or move it away"
    )]
    BadNoBackup {
        path: PathBuf,
        reason: String,
        backup: PathBuf,
    },
    #[error("write state: {step} {path}: {source}")]
    Write {
        step: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the state was found at start.
#[derive(Debug)]
pub enum Loaded {
    /// No state file and no backup: first start.
    Fresh,
    Current(State),
    /// The current file was bad (reason) and was moved to `set_aside`; the last
    /// good copy was used.
    FromBackup {
        state: State,
        reason: String,
        set_aside: Option<PathBuf>,
    },
}

pub fn backup_path(path: &Path) -> PathBuf {
    with_suffix(path, ".bak")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Parse state bytes, explaining what is wrong in operator terms.
pub fn parse(bytes: &[u8]) -> Result<State, String> {
    if bytes.is_empty() {
        return Err("file is empty".into());
    }
    if bytes.iter().all(|b| *b == 0) {
        return Err(format!("file is {} NUL bytes", bytes.len()));
    }
    let state: State = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_eof() {
            format!("file is truncated: {e}")
        } else {
            format!("not a state file: {e}")
        }
    })?;
    if state.format != FORMAT {
        return Err(format!("unknown state format {}", state.format));
    }
    Ok(state)
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Read the state without changing anything on disk (for `status`/`report`).
pub fn peek(path: &Path) -> Result<Loaded, StateError> {
    let backup = backup_path(path);
    let current = read_opt(path)?;
    let reason = match &current {
        Some(bytes) => match parse(bytes) {
            Ok(s) => return Ok(Loaded::Current(s)),
            Err(r) => r,
        },
        None => "file is missing".to_string(),
    };
    match read_opt(&backup)? {
        Some(b) => match parse(&b) {
            Ok(state) => Ok(Loaded::FromBackup {
                state,
                reason,
                set_aside: None,
            }),
            Err(backup_reason) => Err(StateError::BothBad {
                path: path.to_path_buf(),
                reason,
                backup,
                backup_reason,
            }),
        },
        None if current.is_none() => Ok(Loaded::Fresh),
        None => Err(StateError::BadNoBackup {
            path: path.to_path_buf(),
            reason,
            backup,
        }),
    }
}

/// Read the state for the daemon: like [`peek`], and when the backup is used
/// the bad current file is renamed to `<path>.bad-<unix>` so the next write
/// cannot rotate it over the good backup and it stays for inspection.
pub fn load_for_daemon(path: &Path, now_unix: i64) -> Result<Loaded, StateError> {
    match peek(path)? {
        Loaded::FromBackup { state, reason, .. } => {
            let set_aside = if path.exists() {
                let aside = with_suffix(path, &format!(".bad-{now_unix}"));
                std::fs::rename(path, &aside).map_err(|source| StateError::Write {
                    step: "set aside bad state",
                    path: path.to_path_buf(),
                    source,
                })?;
                fsync_parent(path)?;
                Some(aside)
            } else {
                None
            };
            Ok(Loaded::FromBackup {
                state,
                reason,
                set_aside,
            })
        }
        other => Ok(other),
    }
}

/// Write the state crash-safely (see the module comment).
pub fn save(path: &Path, state: &State) -> Result<(), StateError> {
    let bytes = serde_json::to_vec(state).map_err(|e| StateError::Write {
        step: "serialise",
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    write_rotating(path, &bytes, true)
}

/// Temp file in the same folder, fsync, (optionally move the current file to
/// `.bak`), rename over, fsync the folder.
pub fn write_rotating(path: &Path, bytes: &[u8], keep_backup: bool) -> Result<(), StateError> {
    let tmp = with_suffix(path, ".tmp");
    let err = |step: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| StateError::Write {
            step,
            path: p,
            source,
        }
    };

    // Crash here: the old file is intact; a stale .tmp is overwritten next time.
    let mut f = std::fs::File::create(&tmp).map_err(err("create", &tmp))?;
    f.write_all(bytes).map_err(err("write", &tmp))?;
    f.sync_all().map_err(err("fsync", &tmp))?;
    drop(f);

    // Crash after this rename: the current name is missing and `.bak` holds the
    // last good state, which loading picks up.
    if keep_backup && path.exists() {
        std::fs::rename(path, backup_path(path)).map_err(err("rename to .bak", path))?;
    }
    // Crash after this rename but before the folder fsync: the file system may
    // show either name set; both the old and new files were fsynced, so either
    // is a complete state.
    std::fs::rename(&tmp, path).map_err(err("rename", path))?;
    fsync_parent(path)
}

fn fsync_parent(path: &Path) -> Result<(), StateError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::Write {
            step: "fsync folder",
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_state() -> State {
        let mut s = State::new(Period {
            kind: PeriodKind::Monthly,
            start: 0,
            end: 100,
        });
        s.totals.cpu_j = 1234.5;
        s
    }

    #[test]
    fn round_trip_and_backup_rotation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("energy.json");
        let s = sample_state();
        save(&p, &s).unwrap();
        assert!(!backup_path(&p).exists());
        let mut s2 = s.clone();
        s2.totals.cpu_j = 2000.0;
        save(&p, &s2).unwrap();
        assert_eq!(parse(&std::fs::read(backup_path(&p)).unwrap()).unwrap(), s);
        match peek(&p).unwrap() {
            Loaded::Current(got) => assert_eq!(got, s2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_current_falls_back_or_refuses() {
        let cases: [(&str, &[u8]); 3] = [
            ("empty", b""),
            ("NUL", &[0u8; 64]),
            ("truncated", b"{\"format\":1,\"period\":{\"kind\""),
        ];
        for (what, bytes) in cases {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("energy.json");
            std::fs::write(&p, bytes).unwrap();
            let err = peek(&p).unwrap_err().to_string();
            assert!(
                err.contains("energy.json") && err.contains("refusing"),
                "{what}: {err}"
            );

            std::fs::write(
                backup_path(&p),
                serde_json::to_vec(&sample_state()).unwrap(),
            )
            .unwrap();
            match load_for_daemon(&p, 42).unwrap() {
                Loaded::FromBackup {
                    state, set_aside, ..
                } => {
                    assert_eq!(state, sample_state(), "{what}");
                    assert_eq!(std::fs::read(set_aside.unwrap()).unwrap(), bytes, "{what}");
                }
                other => panic!("{what}: {other:?}"),
            }
            assert!(!p.exists(), "{what}: bad file moved aside");
        }
    }
}
