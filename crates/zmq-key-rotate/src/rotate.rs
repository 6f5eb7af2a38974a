//! `rotate`, `list` and `status`: making a new generation, announcing it and
//! pruning old ones.
//!
//! [`plan`] computes a rotation from the index without touching the disk;
//! [`rotate`] commits it in an order where every crash leaves a usable store:
//!
//! 1. certificate files of the new generation (not yet in the index: a crash
//!    leaves unlisted files that the next run overwrites),
//! 2. the signed event,
//! 3. the index with the new generation and the old one's grace end,
//! 4. `previous`, then `current` (a crash between leaves both on the old key),
//! 5. pruning: files first, then the index (a crash leaves records whose
//!    files are gone, deleted again next time).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::Config;
use crate::events::{RotationEvent, Signer};
use crate::store::{Generation, Identity, Index, Link, Store, StoreError};
use crate::{cert, metrics};

/// journald MESSAGE_ID of "key rotated" (documented in docs/zmq-key-rotate.md).
pub const MESSAGE_ROTATED: &str = "0c3b5e1a9f7d4e2b8a6c4d2e1f0a9b8c";

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(
        "the linked libzmq has no CURVE support (zmq::has(\"curve\") is false): install libzmq built with libsodium (Debian: libzmq5)"
    )]
    NoCurve,
    #[error("generate key pair for {identity}: {message}")]
    Generate { identity: Identity, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    EventKey(#[from] crate::events::EventKeyError),
    #[error("lock {path}: {source}")]
    Lock {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Fails unless the linked libzmq can do CURVE.
pub fn require_curve() -> Result<(), RotateError> {
    if zmq::has("curve") == Some(true) {
        Ok(())
    } else {
        Err(RotateError::NoCurve)
    }
}

/// What a rotation will change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub new: Generation,
    /// The generation that becomes `previous`, with its grace end set.
    pub previous: Option<Generation>,
    pub prune: Vec<Generation>,
    /// The index once the rotation (without pruning) is committed.
    pub index: Index,
}

/// Computes a rotation. `current` is the generation `current` points at.
pub fn plan(
    id: &Identity,
    index: &Index,
    current: Option<u64>,
    public_key: String,
    now: u64,
    config: &Config,
) -> Plan {
    let number = index
        .generations
        .iter()
        .map(|g| g.generation)
        .max()
        .unwrap_or(0)
        + 1;
    let grace_until = now + config.grace.as_secs();
    let new = Generation {
        generation: number,
        created: now,
        public_key,
        public_file: format!("{id}-{number}.key"),
        secret_file: format!("{id}-{number}.key_secret"),
        grace_until: None,
    };
    let mut index = index.clone();
    let mut previous = None;
    for g in &mut index.generations {
        if Some(g.generation) == current {
            g.grace_until = Some(grace_until);
            previous = Some(g.clone());
        }
    }
    index.generations.push(new.clone());
    let keep = [Some(number), current];
    let prune = prunable(&index, &keep, now, config.retention);
    Plan {
        new,
        previous,
        prune,
        index,
    }
}

/// Generations older than the retention, except those in `keep`.
pub fn prunable(
    index: &Index,
    keep: &[Option<u64>],
    now: u64,
    retention: Duration,
) -> Vec<Generation> {
    index
        .generations
        .iter()
        .filter(|g| !keep.contains(&Some(g.generation)))
        .filter(|g| now.saturating_sub(g.created) >= retention.as_secs())
        .cloned()
        .collect()
}

/// Unix seconds of `t`.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const MAX_RFC3339: u64 = 253_402_300_799;

/// RFC 3339 text of unix seconds. Config validation keeps the dates this tool
/// computes far below year 10000; a date read from an edited index past it is
/// written as `unix:<seconds>` rather than failing.
pub fn rfc3339(secs: u64) -> String {
    if secs > MAX_RFC3339 {
        return format!("unix:{secs}");
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// The bus endpoints of a generation.
pub fn bus_endpoints(config: &Config, generation: u64) -> (String, String) {
    let dir = config.runtime_dir.join("bus").join(generation.to_string());
    (
        format!("ipc://{}", dir.join("pub.sock").display()),
        format!("ipc://{}", dir.join("sub.sock").display()),
    )
}

/// Holds the store's rotation lock until dropped.
#[derive(Debug)]
pub struct RotationLock {
    _file: std::fs::File,
}

/// Takes the store-wide lock (the timer and an operator may run at once).
pub fn lock(store: &Store) -> Result<RotationLock, RotateError> {
    let path = store.root().join(".rotate.lock");
    let fail = |source| RotateError::Lock {
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(fail)?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| fail(e.into()))?;
    Ok(RotationLock { _file: file })
}

/// What one identity's rotation did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub identity: String,
    /// None when `--if-missing` found a key already.
    pub event: Option<RotationEvent>,
    pub pruned: Vec<u64>,
}

/// Rotates each identity in `ids`. With `if_missing`, identities that already
/// have a current key are left alone (first boot).
pub fn rotate(
    config: &Config,
    ids: &[Identity],
    now: SystemTime,
    if_missing: bool,
) -> Result<Vec<Outcome>, RotateError> {
    require_curve()?;
    let store = Store::new(&config.keys_dir);
    std::fs::create_dir_all(store.root()).map_err(|source| StoreError::Write {
        path: store.root().to_path_buf(),
        source,
    })?;
    let _lock = lock(&store)?;
    let signer = Signer::load_or_create(store.root())?;
    let now = unix(now);

    let mut outcomes = Vec::new();
    for id in ids {
        store.prepare(id, config.key_group.as_deref())?;
        let index = store.index(id)?;
        let current = store.linked(id, Link::Current, &index)?;
        if if_missing && current.is_some() {
            outcomes.push(Outcome {
                identity: id.to_string(),
                event: None,
                pruned: Vec::new(),
            });
            continue;
        }

        // A current key whose secret cannot be loaded is replaced without
        // being demoted: as `previous` the bus could not serve it anyway.
        let demoted = match index
            .generations
            .iter()
            .find(|g| Some(g.generation) == current)
        {
            Some(g) => match store.load_secret(id, g) {
                Ok(_) => current,
                Err(e) => {
                    tracing::error!(identity = %id, generation = g.generation, error = %e, "current key is unusable; replacing it without a grace period");
                    None
                }
            },
            None => None,
        };

        // Step 1: the new key pair and its files.
        let pair = zmq::CurveKeyPair::new().map_err(|e| RotateError::Generate {
            identity: id.clone(),
            message: e.to_string(),
        })?;
        let public = crate::z85::CurveKey::from_bytes(pair.public_key);
        let plan = plan(id, &index, demoted, public.to_z85(), now, config);
        let cert = cert::Cert {
            public,
            secret: Some(crate::z85::CurveKey::from_bytes(pair.secret_key)),
            metadata: vec![
                ("identity".into(), id.to_string()),
                ("generation".into(), plan.new.generation.to_string()),
                ("created".into(), rfc3339(now)),
            ],
        };
        // Steps 1 and 2 write files that no index lists yet: on failure they
        // are removed again, so an error leaves no orphan generation behind.
        let event = match write_new_generation(config, &store, &signer, id, &plan, &cert, now) {
            Ok(event) => event,
            Err(e) => {
                if let Err(cleanup) = store.delete_files(id, &plan.new) {
                    tracing::error!(error = %cleanup, "could not remove the failed generation's files");
                }
                return Err(e);
            }
        };

        // Step 3 and 4: index, then links.
        store.write_index(id, &plan.index)?;
        if let Some(prev) = &plan.previous {
            store.switch(id, Link::Previous, prev)?;
        }
        store.switch(id, Link::Current, &plan.new)?;
        tracing::info!(
            message_id = MESSAGE_ROTATED,
            identity = %id,
            generation = plan.new.generation,
            public_key = %plan.new.public_key,
            previous_generation = plan.previous.as_ref().map(|g| g.generation),
            grace_until = %event.grace_until,
            event_key_id = %signer.key_id(),
            "key rotated"
        );

        // Step 5: prune.
        let mut index = plan.index.clone();
        for g in &plan.prune {
            store.delete_files(id, g)?;
        }
        if !plan.prune.is_empty() {
            index
                .generations
                .retain(|g| !plan.prune.iter().any(|p| p.generation == g.generation));
            store.write_index(id, &index)?;
            tracing::info!(
                identity = %id,
                pruned = ?plan.prune.iter().map(|g| g.generation).collect::<Vec<_>>(),
                "pruned old generations"
            );
        }
        outcomes.push(Outcome {
            identity: id.to_string(),
            event: Some(event),
            pruned: plan.prune.iter().map(|g| g.generation).collect(),
        });
    }

    metrics::write_rotation(config, &store, now);
    Ok(outcomes)
}

/// Steps 1 and 2 of a rotation: the certificate files and the signed event.
fn write_new_generation(
    config: &Config,
    store: &Store,
    signer: &Signer,
    id: &Identity,
    plan: &Plan,
    cert: &cert::Cert,
    now: u64,
) -> Result<RotationEvent, RotateError> {
    store.write_cert(id, &plan.new, cert)?;

    // Step 2: the signed event.
    let (endpoint, publish_endpoint) = if *id == config.bus_identity {
        let (p, s) = bus_endpoints(config, plan.new.generation);
        (Some(s), Some(p))
    } else {
        (None, None)
    };
    let event = RotationEvent {
        identity: id.to_string(),
        generation: plan.new.generation,
        public_key: plan.new.public_key.clone(),
        previous_public_key: plan.previous.as_ref().map(|g| g.public_key.clone()),
        created: rfc3339(now),
        grace_until: rfc3339(now + config.grace.as_secs()),
        endpoint,
        publish_endpoint,
    };
    let json = serde_json::to_vec(&event).map_err(|e| StoreError::Index {
        path: store.events_dir(id),
        message: e.to_string(),
    })?;
    let comment = format!(
        "dickbox-zmq-event:1 identity={id} generation={} created={now}",
        plan.new.generation
    );
    let sig = signer.sign(&json, &comment)?;
    let (event_path, sig_path) = store.event_paths(id, plan.new.generation);
    for (path, bytes) in [(&event_path, &json[..]), (&sig_path, sig.as_bytes())] {
        crate::atomic::write_file(path, bytes, 0o644).map_err(|source| StoreError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(event)
}

/// One generation as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub identity: String,
    pub generation: u64,
    pub role: &'static str,
    pub created: String,
    pub age_seconds: u64,
    pub public_key: String,
    pub grace_until: Option<String>,
    pub prune_after: String,
    /// True when the next rotation would delete it.
    pub pruned_next: bool,
    /// What is wrong with its files (empty when they are fine).
    pub problems: Vec<String>,
}

/// One identity as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub identity: String,
    pub current: Option<u64>,
    pub current_age_seconds: Option<u64>,
    pub previous: Option<u64>,
    pub previous_grace_until: Option<String>,
    pub previous_in_grace: bool,
    pub generations: usize,
    pub pruned_next: Vec<u64>,
    /// Damaged or open files and folders of the current and previous
    /// generations (empty when all is well).
    pub problems: Vec<String>,
}

/// Lists every generation of `ids`, oldest first.
pub fn list(config: &Config, ids: &[Identity], now: SystemTime) -> Result<Vec<Listed>, StoreError> {
    let store = Store::new(&config.keys_dir);
    let now = unix(now);
    let mut out = Vec::new();
    for id in ids {
        let index = store.index(id)?;
        let current = store.linked(id, Link::Current, &index)?;
        let previous = store.linked(id, Link::Previous, &index)?;
        // The next rotation keeps the new key and today's current one.
        let next = prunable(&index, &[current], now, config.retention);
        for g in &index.generations {
            let role = if Some(g.generation) == current {
                "current"
            } else if Some(g.generation) == previous {
                "previous"
            } else {
                "old"
            };
            out.push(Listed {
                identity: id.to_string(),
                generation: g.generation,
                role,
                created: rfc3339(g.created),
                age_seconds: now.saturating_sub(g.created),
                public_key: g.public_key.clone(),
                grace_until: g.grace_until.map(rfc3339),
                prune_after: rfc3339(g.created + config.retention.as_secs()),
                pruned_next: next.iter().any(|n| n.generation == g.generation),
                problems: store.generation_problems(id, g),
            });
        }
    }
    Ok(out)
}

/// Summarises each identity.
pub fn status(
    config: &Config,
    ids: &[Identity],
    now: SystemTime,
) -> Result<Vec<Status>, StoreError> {
    let store = Store::new(&config.keys_dir);
    let now = unix(now);
    let mut out = Vec::new();
    for id in ids {
        let index = store.index(id)?;
        let current = store.linked(id, Link::Current, &index)?;
        let previous = store.linked(id, Link::Previous, &index)?;
        let find = |n: Option<u64>| index.generations.iter().find(|g| Some(g.generation) == n);
        let grace = find(previous).and_then(|g| g.grace_until);
        let mut problems = store.permission_problems(id);
        for g in [find(current), find(previous)].into_iter().flatten() {
            for p in store.generation_problems(id, g) {
                if !problems.contains(&p) {
                    problems.push(p);
                }
            }
        }
        out.push(Status {
            identity: id.to_string(),
            current,
            current_age_seconds: find(current).map(|g| now.saturating_sub(g.created)),
            previous,
            previous_grace_until: grace.map(rfc3339),
            previous_in_grace: grace.is_some_and(|g| g > now),
            generations: index.generations.len(),
            pruned_next: prunable(&index, &[current], now, config.retention)
                .iter()
                .map(|g| g.generation)
                .collect(),
            problems,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileChoice, load};

    fn config(grace: &str, retention: &str) -> Config {
        load(
            &FileChoice::Default("/nonexistent".into()),
            &[],
            &[("grace", grace.into()), ("retention", retention.into())],
        )
        .unwrap()
    }

    fn gen_(n: u64, created: u64) -> Generation {
        Generation {
            generation: n,
            created,
            public_key: format!("k{n}"),
            public_file: format!("bus-{n}.key"),
            secret_file: format!("bus-{n}.key_secret"),
            grace_until: None,
        }
    }

    #[test]
    fn dates_past_year_9999_do_not_panic() {
        assert_eq!(rfc3339(MAX_RFC3339), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(u64::MAX), format!("unix:{}", u64::MAX));
    }

    #[test]
    fn first_rotation_has_no_previous_and_prunes_nothing() {
        let id = Identity::parse("bus").unwrap();
        let index = Index {
            format: 1,
            identity: "bus".into(),
            generations: vec![],
        };
        let p = plan(&id, &index, None, "k1".into(), 1000, &config("1h", "1d"));
        assert_eq!(p.new.generation, 1);
        assert_eq!(p.new.public_file, "bus-1.key");
        assert!(p.previous.is_none() && p.prune.is_empty());
    }

    #[test]
    fn rotation_keeps_current_and_new_and_prunes_only_old_ones() {
        let id = Identity::parse("bus").unwrap();
        let day = 86_400;
        let index = Index {
            format: 1,
            identity: "bus".into(),
            generations: vec![gen_(1, 0), gen_(2, 7 * day), gen_(3, 14 * day)],
        };
        // Current is 3 (14 days old at day 28): kept though older than 10 days.
        let p = plan(
            &id,
            &index,
            Some(3),
            "k4".into(),
            28 * day,
            &config("1h", "10d"),
        );
        assert_eq!(p.new.generation, 4);
        let prev = p.previous.unwrap();
        assert_eq!(prev.generation, 3);
        assert_eq!(prev.grace_until, Some(28 * day + 3600));
        let pruned: Vec<u64> = p.prune.iter().map(|g| g.generation).collect();
        assert_eq!(pruned, vec![1, 2]);
    }
}
