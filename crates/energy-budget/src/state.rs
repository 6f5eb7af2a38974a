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
    pub history: History,
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
    /// Seconds of this period covered by samples: the base of the projection,
    /// so a daemon started mid-period does not spread its joules over time it
    /// did not see.
    pub measured_s: f64,
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

/// Hourly energy for `report --hours`, stored by column: a week of 200
/// services is 33,600 values, and keeping a name and a map entry for each of
/// them would triple the daemon's memory (measured by `bench/run-bench
/// --full-history`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    /// Service names; the columns of every bucket follow this order.
    pub services: Vec<String>,
    pub buckets: Vec<HourBucket>,
}

/// Energy of one clock hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HourBucket {
    pub start: i64,
    pub cpu_j: f64,
    pub gpu_j: f64,
    pub gpu_estimated_j: f64,
    pub profile_j: f64,
    /// `[cpu_j, gpu_j, profile_j]` per service in [`History::services`] order;
    /// shorter when services were added after this hour.
    pub services: Vec<[f64; 3]>,
}

impl History {
    /// Totals of the buckets that start at or after `from`.
    pub fn totals_since(&self, from: i64) -> Totals {
        let mut t = Totals::default();
        for b in self.buckets.iter().filter(|b| b.start >= from) {
            t.cpu_j += b.cpu_j;
            t.gpu_j += b.gpu_j;
            t.gpu_estimated_j += b.gpu_estimated_j;
            t.profile_j += b.profile_j;
            for (name, v) in self.services.iter().zip(&b.services) {
                let e = t.services.entry(name.clone()).or_default();
                e.cpu_j += v[0];
                e.gpu_j += v[1];
                e.profile_j += v[2];
            }
        }
        t
    }

    /// Drop buckets that start at or before `keep_after`, and service columns
    /// that are zero in every remaining bucket.
    pub fn prune(&mut self, keep_after: i64) {
        self.buckets.retain(|b| b.start > keep_after);
        let keep: Vec<bool> = (0..self.services.len())
            .map(|i| {
                self.buckets.iter().any(|b| {
                    b.services
                        .get(i)
                        .is_some_and(|v| v.iter().any(|x| *x != 0.0))
                })
            })
            .collect();
        if keep.iter().all(|k| *k) {
            return;
        }
        let mut it = keep.iter();
        self.services.retain(|_| *it.next().unwrap_or(&true));
        for b in &mut self.buckets {
            let mut it = keep.iter();
            b.services.retain(|_| *it.next().unwrap_or(&true));
        }
    }
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
            history: History::default(),
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
    #[error("{step} {path}: {source}")]
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
    write_rotating_with(path, true, |w| {
        serde_json::to_writer(w, state).map_err(std::io::Error::other)
    })
}

/// Temp file in the same folder, fsync, (optionally move the current file to
/// `.bak`), rename over, fsync the folder.
pub fn write_rotating(path: &Path, bytes: &[u8], keep_backup: bool) -> Result<(), StateError> {
    write_rotating_with(path, keep_backup, |w| w.write_all(bytes))
}

/// [`write_rotating`] with the content streamed by `fill`, so a large state is
/// never held twice in memory.
fn write_rotating_with(
    path: &Path,
    keep_backup: bool,
    fill: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> std::io::Result<()>,
) -> Result<(), StateError> {
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
    let f = std::fs::File::create(&tmp).map_err(err("create", &tmp))?;
    // Any failure from here on removes the temp file again, so a failed write
    // leaves nothing behind.
    let remove_tmp = |e: StateError| {
        let _ = std::fs::remove_file(&tmp);
        e
    };
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, &f);
    fill(&mut w)
        .map_err(err("write", &tmp))
        .map_err(remove_tmp)?;
    w.flush().map_err(err("write", &tmp)).map_err(remove_tmp)?;
    drop(w);
    f.sync_all()
        .map_err(err("fsync", &tmp))
        .map_err(remove_tmp)?;
    drop(f);

    // Crash after this rename: the current name is missing and `.bak` holds the
    // last good state, which loading picks up.
    if keep_backup && path.exists() {
        std::fs::rename(path, backup_path(path))
            .map_err(err("rename to .bak", path))
            .map_err(remove_tmp)?;
    }
    // Crash after this rename but before the folder fsync: the file system may
    // show either name set; both the old and new files were fsynced, so either
    // is a complete state.
    std::fs::rename(&tmp, path)
        .map_err(err("rename", path))
        .map_err(remove_tmp)?;
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
    fn failed_rename_removes_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty folder where the file should go: the rename fails.
        let path = dir.path().join("energy-budget.prom");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), "").unwrap();
        let err = write_rotating(&path, b"metric 1\n", false).unwrap_err();
        assert!(err.to_string().starts_with("rename "), "{err}");
        assert!(!err.to_string().contains("state"), "{err}");
        assert!(
            !with_suffix(&path, ".tmp").exists(),
            "temp file left behind"
        );
    }

    #[test]
    fn history_columns_sum_and_prune() {
        let mut h = History {
            services: vec!["a".into(), "gone".into(), "b".into()],
            buckets: vec![
                HourBucket {
                    start: 0,
                    cpu_j: 1.0,
                    services: vec![[1.0, 0.0, 0.0], [5.0, 0.0, 0.0]],
                    ..HourBucket::default()
                },
                HourBucket {
                    start: 3600,
                    cpu_j: 2.0,
                    services: vec![[1.0, 2.0, 0.0], [0.0; 3], [0.0, 0.0, 3.0]],
                    ..HourBucket::default()
                },
            ],
        };
        let t = h.totals_since(0);
        assert_eq!(t.cpu_j, 3.0);
        assert_eq!(t.services["a"].total_j(), 4.0);
        assert_eq!(t.services["gone"].total_j(), 5.0);
        h.prune(0);
        assert_eq!(h.services, ["a", "b"]);
        assert_eq!(h.buckets.len(), 1);
        assert_eq!(h.buckets[0].services, [[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]);
        assert_eq!(h.totals_since(0).services["b"].profile_j, 3.0);
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
