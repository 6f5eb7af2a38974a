//! The accounting engine and the `run` loop around it.
//!
//! [`Engine`] owns the state in memory: it reads a sample from the configured
//! roots, integrates it, and syncs state and metrics to disk. The loop in
//! [`run`] adds clocks, signals and systemd notification: `READY=1` after the
//! first sample and sync, `WATCHDOG=1` only after a sample that succeeded while
//! the last sync also succeeded, so a daemon that can no longer write its state
//! is restarted by systemd instead of pretending to account.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Instant;

use tracing::{debug, error, info, warn};

use crate::budget::{self, Allocations, J_PER_KWH, message_id};
use crate::cgroup;
use crate::config::Config;
use crate::integrate::{self, Attribution, NoStep, Sample};
use crate::metrics;
use crate::nvml::GpuSource;
use crate::rapl::{self, RaplReading};
use crate::state::{self, State};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("read boot id {path}: {source}")]
    BootId {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("boot id {path}: {value:?} is not a UUID")]
    BadBootId {
        path: std::path::PathBuf,
        value: String,
    },
    #[error("write state: {0}")]
    SaveState(state::StateError),
}

/// The accounting engine.
pub struct Engine {
    cfg: Config,
    state: State,
    gpu: Option<Box<dyn GpuSource>>,
    gpu_unavailable: String,
    boot_id: String,
    unit_gpus: BTreeMap<String, Vec<String>>,
    running: Vec<(String, String)>,
    allocations: Allocations,
    cpu_available: bool,
    cpu_warned: bool,
    /// cgroups skipped by a sample (counter unreadable): when readable again
    /// their counter becomes the baseline, so the gap is not counted as theirs.
    resync: std::collections::BTreeSet<String>,
    /// Counter files already warned about; each is warned about once until it
    /// is readable again.
    bad_files: std::collections::BTreeSet<String>,
    /// The last metrics write error, warned about once until it changes.
    metrics_error: Option<String>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("budget_path", &self.cfg.budget_path)
            .field("boot_id", &self.boot_id)
            .finish_non_exhaustive()
    }
}

/// Wall clock in seconds since the epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// CLOCK_BOOTTIME in seconds: keeps counting through suspend and is the same
/// clock for every process of one boot, so it measures real time between a
/// sample before a crash and one after the restart.
pub fn boottime_now() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

impl Engine {
    /// Load the state (refusing a bad one without a good backup) and set up the
    /// sources. `gpu` is `Err(reason)` when there is no GPU source.
    pub fn start(
        cfg: Config,
        gpu: Result<Box<dyn GpuSource>, String>,
        now_unix: f64,
    ) -> Result<Self, EngineError> {
        let boot_path = cfg.proc_root.join("sys/kernel/random/boot_id");
        let boot_id = std::fs::read_to_string(&boot_path)
            .map_err(|source| EngineError::BootId {
                path: boot_path.clone(),
                source,
            })?
            .trim()
            .to_string();
        // The boot id is a UUID; anything else (NUL bytes, an empty file) is
        // not a boot id and would make every restart look like a new boot or
        // none.
        let well_formed = !boot_id.is_empty()
            && boot_id.len() <= 64
            && boot_id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        if !well_formed {
            return Err(EngineError::BadBootId {
                path: boot_path,
                value: boot_id,
            });
        }

        let state = match state::load_for_daemon(&cfg.budget_path, now_unix as i64)? {
            state::Loaded::Fresh => {
                info!(path = %cfg.budget_path.display(), "no energy state yet, starting a new one");
                State::new(budget::period_at(cfg.period, now_unix as i64))
            }
            state::Loaded::Current(s) => {
                info!(path = %cfg.budget_path.display(), "energy state loaded");
                s
            }
            state::Loaded::FromBackup {
                state,
                reason,
                set_aside,
            } => {
                warn!(
                    path = %cfg.budget_path.display(),
                    reason = %reason,
                    set_aside = ?set_aside,
                    "energy state unusable, continuing from its last good copy"
                );
                state
            }
        };

        let (gpu, gpu_unavailable) = match gpu {
            Ok(g) => (Some(g), String::new()),
            Err(reason) => {
                warn!(reason = %reason, "GPU energy not measured; carrying on with CPU energy");
                (None, reason)
            }
        };
        let allocations = load_allocations_logged(&cfg, &Allocations::default());
        Ok(Engine {
            cfg,
            state,
            gpu,
            gpu_unavailable,
            boot_id,
            unit_gpus: BTreeMap::new(),
            running: Vec::new(),
            allocations,
            cpu_available: false,
            cpu_warned: false,
            resync: Default::default(),
            bad_files: Default::default(),
            metrics_error: None,
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Read every source at the given clock values.
    pub fn read_sample(&mut self, boottime_s: f64, unix_s: f64) -> Result<Sample, EngineError> {
        // A bad cgroup or /proc/stat file costs only the shares it feeds:
        // host energy keeps being counted and the watchdog keeps being pinged.
        let mut problems: Vec<(String, String)> = Vec::new();
        let units = match cgroup::detect(&self.cfg.cgroup_root) {
            Ok(layout) => {
                let scan = cgroup::read_units(&layout, &self.cfg.units);
                for sk in scan.skipped {
                    problems.push((sk.cgroup.clone(), sk.error.to_string()));
                    self.resync.insert(sk.cgroup);
                }
                scan.units
            }
            Err(e) => {
                if let Some(b) = &self.state.baseline {
                    self.resync.extend(b.cgroups.keys().cloned());
                }
                problems.push((self.cfg.cgroup_root.display().to_string(), e.to_string()));
                Vec::new()
            }
        };
        let host_busy_usec = cgroup::host_busy_usec(&self.cfg.proc_root).map_err(|e| {
            problems.push((
                self.cfg.proc_root.join("stat").display().to_string(),
                e.to_string(),
            ));
            e.to_string()
        });
        self.note_problems(problems);
        let gpus = match &mut self.gpu {
            Some(g) => g.sample().map_err(|e| e.to_string()),
            None => Err(self.gpu_unavailable.clone()),
        };
        Ok(Sample {
            boot_id: self.boot_id.clone(),
            boottime_s,
            unix_s,
            rapl: rapl::read_zones(&self.cfg.rapl_root),
            gpus,
            units,
            host_busy_usec,
        })
    }

    /// Warn once per bad counter file (naming it), and say when it is readable
    /// again.
    fn note_problems(&mut self, problems: Vec<(String, String)>) {
        let bad: std::collections::BTreeSet<String> =
            problems.iter().map(|(k, _)| k.clone()).collect();
        for (key, error) in problems {
            if self.bad_files.insert(key.clone()) {
                warn!(
                    counter = %key,
                    error = %error,
                    "CPU time counter unreadable: skipped (its share stays with the host) \
                     until it is readable again"
                );
            }
        }
        let recovered: Vec<String> = self.bad_files.difference(&bad).cloned().collect();
        for k in recovered {
            info!(counter = %k, "CPU time counter readable again (or gone)");
            self.bad_files.remove(&k);
        }
    }

    /// Integrate one sample into the in-memory state.
    pub fn apply(&mut self, s: Sample) {
        self.refresh_unit_gpus(&s);
        let attr = Attribution {
            unit_gpus: self.unit_gpus.clone(),
            power_profiles: self.cfg.power_profiles.clone(),
        };
        let mut prev = self.state.baseline.take();
        // A cgroup skipped earlier restarts from its current counter: its time
        // during the gap stayed with the host and is not counted twice.
        for u in &s.units {
            if self.resync.remove(&u.cgroup)
                && let Some(p) = prev.as_mut()
            {
                p.cgroups.insert(u.cgroup.clone(), u.usage_usec);
            }
        }
        let (step, prev_unix) = match integrate::step(prev.as_ref(), &s, &attr) {
            Ok(step) => {
                for note in &step.notes {
                    info!(note = %note, "counter epoch changed");
                }
                for w in &step.warnings {
                    warn!(problem = %w, "energy counter not plausible");
                }
                let p = prev.as_ref().map(|b| b.unix_s).unwrap_or(s.unix_s);
                (step, p)
            }
            Err(why) => {
                match why {
                    NoStep::FirstSample => debug!("first sample: counters become the baseline"),
                    NoStep::NewBoot { previous } => info!(
                        previous_boot = %previous,
                        "new boot: counters restarted; energy between the previous boot's \
                         last sync and its shutdown was not measured"
                    ),
                    NoStep::NoElapsedTime => {
                        warn!("sample clock did not advance; baseline replaced")
                    }
                }
                (integrate::Step::default(), s.unix_s)
            }
        };
        let closed = budget::record(
            &mut self.state,
            self.cfg.period,
            &step,
            prev_unix,
            s.unix_s,
            self.cfg.budget_kwh,
            self.cfg.history_hours,
        );
        for p in closed {
            info!(
                MESSAGE_ID = message_id::PERIOD_CLOSED,
                start = %budget::date_of(p.period.start),
                used_kwh = p.totals.used_j() / J_PER_KWH,
                budget_kwh = p.budget_kwh,
                "energy budget period closed"
            );
            self.release_enforcement();
        }

        match &s.rapl {
            RaplReading::Ok(z) => {
                if !self.cpu_available && self.cpu_warned {
                    info!(zones = z.len(), "CPU energy readable again");
                }
                self.cpu_available = true;
                self.cpu_warned = false;
                self.state.sources.cpu = format!("rapl: {} zones", z.len());
            }
            RaplReading::Unavailable(why) => {
                if !self.cpu_warned {
                    warn!(
                        MESSAGE_ID = message_id::CPU_ENERGY_UNAVAILABLE,
                        reason = %why,
                        "CPU energy unavailable: not counted (power profiles used where configured)"
                    );
                    self.cpu_warned = true;
                }
                self.cpu_available = false;
                self.state.sources.cpu = format!("unavailable: {why}");
            }
        }
        let gpu_source = match &s.gpus {
            Ok(g) => {
                let no_counter: Vec<&str> = g
                    .iter()
                    .filter(|r| r.total_energy_mj.is_none())
                    .map(|r| r.uuid.as_str())
                    .collect();
                if no_counter.is_empty() {
                    format!("nvml: {} GPUs", g.len())
                } else {
                    format!(
                        "nvml: {} GPUs; without energy counter, power x time (estimate): {}",
                        g.len(),
                        no_counter.join(", ")
                    )
                }
            }
            Err(why) => format!("unavailable: {why}"),
        };
        // Say it once per change, not every sample.
        if gpu_source != self.state.sources.gpu {
            if s.gpus.is_err() && self.gpu.is_some() {
                warn!(status = %gpu_source, "GPU energy source changed");
            } else {
                info!(status = %gpu_source, "GPU energy source changed");
            }
            self.state.sources.gpu = gpu_source;
        }
        self.state.sources.cgroups = format!("{} units", s.units.len());
        self.running = s
            .units
            .iter()
            .map(|u| (u.unit.clone(), u.service.clone()))
            .collect();
        self.state.baseline = Some(integrate::baseline_of(&s, prev.as_ref()));
    }

    fn refresh_unit_gpus(&mut self, s: &Sample) {
        let live: std::collections::BTreeSet<&str> =
            s.units.iter().map(|u| u.unit.as_str()).collect();
        self.unit_gpus.retain(|u, _| live.contains(u.as_str()));
        for u in &s.units {
            if !self.unit_gpus.contains_key(&u.unit) {
                let mut g = cgroup::gpus_of_unit(&self.cfg.unit_dirs, &u.unit);
                for id in &mut g {
                    if !id.starts_with("MIG-") {
                        continue;
                    }
                    // Energy is counted per physical GPU: a MIG instance's
                    // service shares its parent's. Without NVML there is no
                    // parent, and no GPU energy to share either.
                    if let Some(src) = &mut self.gpu {
                        match src.parent_gpu(id) {
                            Ok(parent) => *id = parent,
                            Err(e) => warn!(
                                unit = %u.unit, gpu = %id, error = %e,
                                "MIG instance not mapped to its GPU; its energy stays with the host"
                            ),
                        }
                    }
                }
                g.sort();
                g.dedup();
                if !g.is_empty() {
                    debug!(unit = %u.unit, gpus = ?g, "unit uses GPUs");
                }
                self.unit_gpus.insert(u.unit.clone(), g);
            }
        }
    }

    /// Effective allocations of this period.
    pub fn allocations(&self) -> BTreeMap<String, f64> {
        budget::effective_allocations(
            self.cfg.budget_kwh,
            &self.allocations,
            &self.cfg.weights,
            self.state.totals.services.keys().cloned(),
        )
    }

    /// Write state and metrics, then log the warnings that became due and apply
    /// enforcement. Warnings are marked fired in the same write, and logged
    /// only once it succeeded, so each is logged once per period. Returns the
    /// warnings logged.
    pub fn sync(&mut self, now_unix: f64) -> Result<Vec<budget::Warning>, EngineError> {
        self.allocations = load_allocations_logged(&self.cfg, &self.allocations);
        let allocs = self.allocations();
        let due = budget::due_warnings(&mut self.state, self.cfg.budget_kwh, &allocs, now_unix);
        self.state.last_sync_unix = now_unix;
        if let Err(e) = state::save(&self.cfg.budget_path, &self.state) {
            for w in &due {
                self.state.warnings_fired.remove(&w.key);
            }
            return Err(EngineError::SaveState(e));
        }
        for w in &due {
            warn!(
                MESSAGE_ID = w.message_id,
                service = w.service.as_deref().unwrap_or(""),
                percent = w.percent.unwrap_or(0),
                used_kwh = w.used_kwh,
                limit_kwh = w.limit_kwh,
                "{}",
                w.text
            );
        }
        if self.cfg.enforce {
            self.enforce(&allocs);
        }
        let projection = budget::projection_kwh(&self.state, now_unix);
        let text = metrics::render(
            &self.state,
            self.cfg.budget_kwh,
            &allocs,
            projection,
            self.cpu_available,
        );
        // Metrics are a view for node-exporter: a missing or read-only folder
        // is warned about (once per distinct error) and never stops the
        // accounting.
        match metrics::write(&self.cfg.metrics_path, &text) {
            Ok(()) => {
                if self.metrics_error.take().is_some() {
                    info!(path = %self.cfg.metrics_path.display(), "metrics written again");
                }
            }
            Err(e) => {
                let e = e.to_string();
                if self.metrics_error.as_deref() != Some(e.as_str()) {
                    warn!(
                        path = %self.cfg.metrics_path.display(),
                        error = %e,
                        "write metrics failed; accounting goes on"
                    );
                    self.metrics_error = Some(e);
                }
            }
        }
        Ok(due)
    }

    fn enforce(&mut self, allocs: &BTreeMap<String, f64>) {
        let running = self.running.iter().map(|(u, s)| (u.as_str(), s.as_str()));
        for unit in budget::units_to_enforce(&self.state, allocs, running) {
            let quota = format!("CPUQuota={}%", self.cfg.enforce_cpu_quota);
            match set_property(&unit, &quota) {
                Ok(()) => {
                    warn!(
                        MESSAGE_ID = message_id::ALLOCATION_ENFORCED,
                        unit = %unit,
                        cpu_quota = self.cfg.enforce_cpu_quota,
                        "service over its energy allocation: CPUQuota lowered until the period ends"
                    );
                    self.state.enforced.insert(unit);
                }
                Err(e) => error!(unit = %unit, error = %e, "lower CPUQuota failed"),
            }
        }
    }

    /// At a period's end, lift the quotas this daemon set (an empty CPUQuota=
    /// resets it to the unit's own setting).
    fn release_enforcement(&mut self) {
        for unit in std::mem::take(&mut self.state.enforced) {
            if let Err(e) = set_property(&unit, "CPUQuota=") {
                // The unit may be gone (new release); a runtime property dies with it.
                debug!(unit = %unit, error = %e, "reset CPUQuota failed");
            }
        }
    }

    /// Sample now and integrate; returns whether the sample succeeded.
    pub fn sample_now(&mut self) -> Result<(), EngineError> {
        let s = self.read_sample(boottime_now(), unix_now())?;
        self.apply(s);
        Ok(())
    }
}

fn set_property(unit: &str, assignment: &str) -> std::io::Result<()> {
    let out = std::process::Command::new("systemctl")
        .args(["set-property", "--runtime", "--", unit, assignment])
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "systemctl set-property {unit} {assignment}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn load_allocations_logged(cfg: &Config, current: &Allocations) -> Allocations {
    let path = budget::allocations_path(&cfg.budget_path);
    match budget::load_allocations(&path) {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "keeping previous allocations");
            current.clone()
        }
    }
}

/// Messages from the signal thread.
enum Wake {
    Stop(i32),
}

/// The daemon: sample, integrate, sync, notify, until SIGTERM/SIGINT.
pub fn run(cfg: Config, gpu: Result<Box<dyn GpuSource>, String>) -> anyhow::Result<()> {
    let sample_every = cfg.sample_interval;
    let sync_every = cfg.sync_interval;
    if let Some(wd) = sd_notify::watchdog_enabled()
        && wd < sample_every * 2
    {
        warn!(
            watchdog = ?wd,
            sample_interval = ?sample_every,
            "WatchdogSec is less than twice sample_interval: expect watchdog restarts"
        );
    }
    let mut engine = Engine::start(cfg, gpu, unix_now())?;

    let (tx, rx) = mpsc::channel();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let _ = tx.send(Wake::Stop(sig));
        }
    });

    // The first sample sets (or, after a restart, resumes from) the baseline;
    // ready only once it and a sync worked.
    engine.sample_now()?;
    engine.sync(unix_now())?;
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status_line(&engine)),
    ]);
    info!(
        budget_path = %engine.config().budget_path.display(),
        sample_interval = ?sample_every,
        sync_interval = ?sync_every,
        "energy-budget running"
    );

    let mut next_sample = Instant::now() + sample_every;
    let mut next_sync = Instant::now() + sync_every;
    let mut sync_ok = true;
    loop {
        let wait = next_sample.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Wake::Stop(sig)) => {
                info!(signal = sig, "stopping: final sample and sync");
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                if let Err(e) = engine.sample_now() {
                    warn!(error = %e, "final sample failed; syncing what was counted");
                }
                engine.sync(unix_now())?;
                return Ok(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("signal thread ended unexpectedly")
            }
        }
        next_sample += sample_every;
        let now = Instant::now();
        if next_sample < now {
            // We fell behind (suspend, overload): do not fire a burst to catch
            // up; real elapsed time is integrated anyway.
            next_sample = now + sample_every;
        }

        let sampled = match engine.sample_now() {
            Ok(()) => true,
            Err(e) => {
                error!(error = %e, "sample failed");
                false
            }
        };
        if now >= next_sync {
            next_sync = now + sync_every;
            sync_ok = match engine.sync(unix_now()) {
                Ok(_) => true,
                Err(e) => {
                    error!(error = %e, "sync failed; watchdog pings stop until a sync succeeds");
                    false
                }
            };
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status_line(&engine))]);
        }
        if sampled && sync_ok {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
    }
}

fn status_line(engine: &Engine) -> String {
    let used = engine.state().totals.used_j() / J_PER_KWH;
    format!(
        "{:.3} kWh of {:.3} kWh this period; cpu {}",
        used,
        engine.config().budget_kwh,
        engine.state().sources.cpu
    )
}

/// Open the configured GPU source.
pub fn open_gpu(cfg: &Config) -> Result<Box<dyn GpuSource>, String> {
    match cfg.gpu {
        crate::config::GpuSourceKind::Off => Err("disabled in config (gpu: off)".into()),
        crate::config::GpuSourceKind::Nvml => crate::nvml::NvmlSource::open()
            .map(|s| Box::new(s) as Box<dyn GpuSource>)
            .map_err(|e| e.to_string()),
    }
}
