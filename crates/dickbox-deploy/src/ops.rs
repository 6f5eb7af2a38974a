//! The operations: deploy, rollback, remove, gc, recover, status, list.
//!
//! Deploy and rollback share one switch (`switch_to`): write units, start
//! the new instances beside the old ones, health-check them, then switch every
//! service's front and links, enable the new instances, drain and stop the
//! old ones. Each step is written to the journal before it is taken, so after
//! a crash `recover` knows whether to undo (before the switch) or finish
//! (after it). Any failure before the switch stops the new instances and
//! leaves the old ones serving, untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use capsule::manifest::{Listen, ServiceType};
use capsule::names::{ReleaseId, ServiceName};
use serde_json::json;

use crate::config::Settings;
use crate::health::{self, Target};
use crate::lock;
use crate::metrics;
use crate::stage::{self, Release};
use crate::state::{self, JournalRecord, JournalService, Step};
use crate::systemd::Systemd;
use crate::units;
use crate::verify::{self, Refused};

/// Everything an operation needs.
#[derive(Debug)]
pub struct Ctx {
    pub s: Settings,
    pub sd: Systemd,
}

/// The new version failed to start or to become healthy: exit code 4. The
/// old version is still serving.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeployFailed(pub String);

#[derive(Debug, Default, Clone)]
pub struct DeployOptions {
    pub allow_downgrade: bool,
    pub bake: Option<Duration>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn tx_id() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}-{:09}-{}",
        t.as_secs(),
        t.subsec_nanos(),
        std::process::id()
    )
}

/// Verifies and stages without touching systemd (`dickbox-deploy verify`).
/// `verify` answers "would deploy accept this capsule here": the same
/// verification, staging and release checks, without starting anything.
pub fn verify_only(ctx: &Ctx, source: &Path) -> Result<Release> {
    let _lock = lock::acquire(&ctx.s.raw.lock_path, ctx.s.lock_timeout)?;
    let mut v = verify::verify(&ctx.s, source)?;
    stage_checked(ctx, &mut v, |_| Ok(()))
}

/// Stages a verified capsule, then runs `extra` and the release checks
/// deploy and verify share; a release this call staged is removed again when
/// a check refuses it (exit code 3).
fn stage_checked(
    ctx: &Ctx,
    v: &mut verify::Verified,
    extra: impl FnOnce(&Release) -> Result<()>,
) -> Result<Release> {
    let existed = ctx.s.releases_dir().join(v.release_id.as_str()).exists();
    let rel = stage::stage(&ctx.s, v)?;
    if let Err(e) = extra(&rel).and_then(|()| check_release(ctx, v, &rel)) {
        if !existed {
            stage::make_writable(&rel.path);
            let _ = fs::remove_dir_all(&rel.path);
        }
        return Err(Refused::Other(e.to_string()).into());
    }
    Ok(rel)
}

/// The checks of a verified, staged release that deploy and verify share:
/// the manifest's `public_key` (never trusted, only compared with the
/// minisign key that verified) and service ownership. Errors name the file.
fn check_release(ctx: &Ctx, v: &verify::Verified, rel: &Release) -> Result<()> {
    let file = v.path.display();
    let name = &rel.manifest.name;
    if let Some(pk) = &rel.manifest.public_key {
        let claimed = capsule::minisig::PublicKey::from_base64(pk, "capsule.yml public_key")
            .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        match &v.minisign {
            Some((_, key_path)) => {
                let trusted = capsule::minisig::PublicKey::from_file(key_path)?;
                if claimed.key_bytes() != trusted.key_bytes() {
                    bail!(
                        "{file}: capsule.yml public_key ({}) is not the host key that verified \
                         the capsule ({}, {})",
                        claimed.key_id,
                        trusted.key_id,
                        key_path.display()
                    );
                }
            }
            None => tracing::warn!(
                key_id = %claimed.key_id,
                "capsule.yml names a minisign public_key but no minisign signature was verified; ignoring it"
            ),
        }
    }
    for svc in &rel.manifest.services {
        if let Some(owner) = state::owner(&ctx.s, &svc.name)
            && &owner != name
        {
            bail!(
                "{file}: service {} belongs to capsule {owner}; capsule {name} may not take it over",
                svc.name
            );
        }
    }
    Ok(())
}

pub fn deploy(ctx: &Ctx, source: &Path, opts: &DeployOptions) -> Result<Release> {
    let _lock = lock::acquire(&ctx.s.raw.lock_path, ctx.s.lock_timeout)?;
    let started = Instant::now();
    let mut v = verify::verify(&ctx.s, source)?;
    // The downgrade floor, checked on the verified manifest.
    let floors = state::floors(&ctx.s)?;
    let rel = stage_checked(ctx, &mut v, |rel| {
        let (name, version) = (&rel.manifest.name, &rel.manifest.version);
        if let Some(floor) = floors.get(name.as_str())
            && version < floor
        {
            if !opts.allow_downgrade {
                bail!(
                    "{name} {version} is older than {floor}, the highest version deployed on \
                     this host: refusing a downgrade (use `rollback` to a kept release, or \
                     --allow-downgrade)"
                );
            }
            tracing::warn!(capsule = %name, version = %version, floor = %floor, "downgrade allowed by --allow-downgrade");
        }
        Ok(())
    })?;
    let name = rel.manifest.name.clone();
    let version = rel.manifest.version.clone();

    let all_current = rel
        .manifest
        .services
        .iter()
        .all(|svc| state::current(&ctx.s, &svc.name).as_ref() == Some(&rel.id));
    if all_current {
        tracing::info!(capsule = %name, release = %rel.id, "release is already current: nothing to do");
        return Ok(rel);
    }

    switch_to(ctx, &rel, "deploy", &v.signed_by())?;
    state::raise_floor(&ctx.s, &name, &version)?;
    let secs = started.elapsed().as_secs_f64();
    metrics::update(&ctx.s, |c| {
        for svc in &rel.manifest.services {
            *c.deployments
                .entry(format!("{}|success", svc.name))
                .or_default() += 1;
            let d = c.duration.entry(svc.name.to_string()).or_default();
            d.0 += secs;
            d.1 += 1;
        }
    });
    state::record_history(
        &ctx.s,
        &json!({"time": now(), "op": "deploy", "result": "success", "capsule": name.as_str(),
                "version": version.to_string(), "release": rel.id.as_str(), "seconds": secs}),
    );

    if let Some(bake) = opts.bake {
        bake_or_roll_back(ctx, &rel, bake)?;
    }
    if let Err(e) = gc_locked(ctx, ctx.s.raw.keep) {
        tracing::warn!(error = %format!("{e:#}"), "gc after deploy failed");
    }
    Ok(rel)
}

/// Watches the new release for `bake`; if an instance stops being active or
/// healthy, switches back to the previous release by itself.
fn bake_or_roll_back(ctx: &Ctx, rel: &Release, bake: Duration) -> Result<()> {
    tracing::info!(release = %rel.id, ?bake, "baking the new release");
    let end = Instant::now() + bake;
    while Instant::now() < end {
        for svc in &rel.manifest.services {
            let unit = units::instance_name(&svc.name, &rel.id);
            let healthy = ctx.sd.is_active(&unit)
                && health::probe(
                    &target(ctx, svc, &rel.id),
                    svc.health_check_url.as_deref(),
                    Duration::from_secs(2),
                )
                .is_ok_and(|c| (200..300).contains(&c));
            if !healthy {
                let prev = state::previous(&ctx.s, &svc.name).context(
                    "the new release failed during bake and there is no previous release",
                )?;
                tracing::error!(service = %svc.name, release = %rel.id, "new release failed during bake: rolling back");
                let back = stage::load_release(&ctx.s, &prev)?;
                switch_to(ctx, &back, "rollback", "bake")?;
                metrics::update(&ctx.s, |c| {
                    *c.rollbacks.entry(format!("{}|bake", svc.name)).or_default() += 1;
                });
                return Err(DeployFailed(format!(
                    "{} {} failed within its bake time ({unit} unhealthy); rolled back to {prev}",
                    rel.manifest.name, rel.manifest.version
                ))
                .into());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

fn target(ctx: &Ctx, svc: &capsule::manifest::Service, id: &ReleaseId) -> Target {
    match svc.listen {
        Listen::Unix => Target::Unix(units::socket_path(&ctx.s, &svc.name, id)),
        Listen::Tcp => {
            let port = state::ports(&ctx.s, &svc.name)
                .get(id.as_str())
                .copied()
                .unwrap_or(0);
            Target::Tcp(port)
        }
    }
}

/// Picks the blue or green port for a new release of a tcp service: the one
/// the current release does not use.
fn assign_port(ctx: &Ctx, svc: &ServiceName, id: &ReleaseId) -> Result<u16> {
    let pair = ctx.s.raw.ports.get(svc.as_str()).with_context(|| {
        format!("service {svc} listens on tcp but deploy.ports has no blue/green pair for it")
    })?;
    let mut map = state::ports(&ctx.s, svc);
    if let Some(p) = map.get(id.as_str()) {
        return Ok(*p);
    }
    let cur = state::current(&ctx.s, svc).and_then(|c| map.get(c.as_str()).copied());
    let port = if cur == Some(pair[0]) {
        pair[1]
    } else {
        pair[0]
    };
    map.retain(|k, v| {
        *v != port || Some(k.as_str()) == state::current(&ctx.s, svc).as_ref().map(|c| c.as_str())
    });
    map.insert(id.to_string(), port);
    state::set_ports(&ctx.s, svc, &map)?;
    Ok(port)
}

/// The blue-green switch of every service of `rel`, all or none.
pub fn switch_to(ctx: &Ctx, rel: &Release, op: &str, key_id: &str) -> Result<()> {
    let s = &ctx.s;
    let services = &rel.manifest.services;
    let mut rec = JournalRecord {
        tx: tx_id(),
        op: op.to_owned(),
        capsule: rel.manifest.name.to_string(),
        new: Some(rel.id.to_string()),
        services: services
            .iter()
            .map(|svc| JournalService {
                name: svc.name.to_string(),
                old_current: state::current(s, &svc.name).map(|r| r.to_string()),
                old_previous: state::previous(s, &svc.name).map(|r| r.to_string()),
            })
            .collect(),
        step: Step::Begin,
        version: Some(rel.manifest.version.to_string()),
    };
    rec.write(s, Step::Begin)?;

    // Units first, then one daemon-reload before any start.
    let mut ports = BTreeMap::new();
    for svc in services {
        let port = match svc.listen {
            Listen::Tcp => Some(assign_port(ctx, &svc.name, &rel.id)?),
            Listen::Unix => None,
        };
        ports.insert(svc.name.clone(), port);
        units::write_units(s, svc, rel, port, key_id)?;
    }
    rec.write(s, Step::UnitsWritten)?;
    ctx.sd.daemon_reload()?;

    rec.write(s, Step::Starting)?;
    let mut started = Vec::new();
    let fail = |ctx: &Ctx, rec: &JournalRecord, started: &[String], why: String| -> anyhow::Error {
        for unit in started {
            if let Err(e) = ctx.sd.stop(unit) {
                tracing::error!(unit = %unit, error = %format!("{e:#}"), "could not stop the new instance");
            }
            ctx.sd.reset_failed(unit);
        }
        if let Err(e) = rec.finish(&ctx.s) {
            tracing::error!(error = %format!("{e:#}"), "could not close the journal record");
        }
        metrics::update(&ctx.s, |c| {
            for svc in &rel.manifest.services {
                *c.deployments
                    .entry(format!("{}|failed", svc.name))
                    .or_default() += 1;
            }
        });
        state::record_history(
            &ctx.s,
            &json!({"time": now(), "op": rec.op, "result": "failed", "capsule": rec.capsule,
                    "release": rec.new, "reason": why}),
        );
        tracing::error!(
            message_id = crate::MSG_DEPLOY_FAILED, capsule = %rec.capsule, release = ?rec.new,
            reason = %why, "deploy failed; the old version keeps serving"
        );
        DeployFailed(format!(
            "{} {} (release {}) was not switched to: {why}; the previous version keeps serving",
            rel.manifest.name, rel.manifest.version, rel.id
        ))
        .into()
    };
    for svc in services {
        let unit = units::instance_name(&svc.name, &rel.id);
        ctx.sd.reset_failed(&unit);
        started.push(unit.clone());
        tracing::info!(unit = %unit, "starting the new instance");
        if let Err(e) = ctx.sd.start(&unit, svc.startup_timeout) {
            return Err(fail(
                ctx,
                &rec,
                &started,
                format!("{unit} did not start: {e:#}"),
            ));
        }
    }
    for svc in services {
        let unit = units::instance_name(&svc.name, &rel.id);
        let t = target(ctx, svc, &rel.id);
        let check = svc.health_check_url.is_some() || svc.kind == ServiceType::Simple;
        if check {
            let sd = ctx.sd.clone();
            let u = unit.clone();
            let mut alive = move || sd.is_active(&u);
            match health::wait_healthy(
                &t,
                svc.health_check_url.as_deref(),
                svc.startup_timeout,
                &mut alive,
            ) {
                Ok(took) => {
                    tracing::info!(unit = %unit, took_ms = took.as_millis() as u64, "new instance is healthy")
                }
                Err(e) => {
                    return Err(fail(
                        ctx,
                        &rec,
                        &started,
                        format!("{unit} health check failed: {e}"),
                    ));
                }
            }
        }
    }
    rec.write(s, Step::Healthy)?;

    // The switch. From here on a crash is finished by recover, not undone.
    rec.write(s, Step::Switching)?;
    let t_switch = Instant::now();
    apply_switch(ctx, rel, &rec)?;
    rec.write(s, Step::Switched)?;
    tracing::info!(
        capsule = %rel.manifest.name, release = %rel.id,
        switch_ms = t_switch.elapsed().as_millis() as u64, "switched"
    );
    finish_switch(ctx, rel, &rec)?;
    rec.write(s, Step::OldStopped)?;
    rec.finish(s)?;
    Ok(())
}

/// Moves every service's links and front to the new release.
fn apply_switch(ctx: &Ctx, rel: &Release, rec: &JournalRecord) -> Result<()> {
    let s = &ctx.s;
    for (svc, js) in rel.manifest.services.iter().zip(&rec.services) {
        if let Some(old) = &js.old_current
            && old != rel.id.as_str()
        {
            state::set_link(s, &svc.name, "previous", Some(&ReleaseId::parse(old)?))?;
        }
        state::set_link(s, &svc.name, "current", Some(&rel.id))?;
        crate::crash_point("switch-between-links");
        match svc.listen {
            Listen::Unix => state::set_front(s, &svc.name, &rel.id)?,
            Listen::Tcp => crate::haproxy::switch(s, &svc.name, &rel.id)?,
        }
        state::set_owner(s, &svc.name, &rel.manifest.name)?;
    }
    Ok(())
}

/// After the switch: enable the new instances, drain and stop the old ones.
fn finish_switch(ctx: &Ctx, rel: &Release, rec: &JournalRecord) -> Result<()> {
    let mut old_units = Vec::new();
    for (svc, js) in rel.manifest.services.iter().zip(&rec.services) {
        let new_unit = units::instance_name(&svc.name, &rel.id);
        ctx.sd.enable(&new_unit)?;
        if let Some(old) = &js.old_current
            && old != rel.id.as_str()
        {
            let old_unit = units::instance_name(&svc.name, &ReleaseId::parse(old)?);
            ctx.sd.disable(&old_unit)?;
            old_units.push(old_unit);
        }
    }
    if !old_units.is_empty() {
        // Let requests already inside the old instances finish.
        std::thread::sleep(ctx.s.drain);
    }
    for u in &old_units {
        ctx.sd.stop(u)?;
        tracing::info!(unit = %u, "old instance stopped");
    }
    Ok(())
}

pub fn rollback(ctx: &Ctx, svc: &ServiceName, to: Option<&ReleaseId>) -> Result<Release> {
    let _lock = lock::acquire(&ctx.s.raw.lock_path, ctx.s.lock_timeout)?;
    let cur = state::current(&ctx.s, svc)
        .with_context(|| format!("service {svc} has no current release"))?;
    let target = match to {
        Some(t) => t.clone(),
        None => state::previous(&ctx.s, svc)
            .with_context(|| format!("service {svc} has no previous release to roll back to"))?,
    };
    if target == cur {
        bail!("release {target} is already current for {svc}");
    }
    if !ctx.s.releases_dir().join(target.as_str()).is_dir() {
        return Err(Refused::Other(format!(
            "release {target} is not kept on this host (see `dickbox-deploy list`)"
        ))
        .into());
    }
    let rel = stage::load_release(&ctx.s, &target)?;
    if let Some(owner) = state::owner(&ctx.s, svc)
        && owner != rel.manifest.name
    {
        return Err(Refused::Other(format!(
            "release {target} is capsule {}, but {svc} belongs to {owner}",
            rel.manifest.name
        ))
        .into());
    }
    if rel.manifest.service(svc.as_str()).is_none() {
        return Err(Refused::Other(format!("release {target} has no service {svc}")).into());
    }
    tracing::info!(service = %svc, from = %cur, to = %target, "rolling back");
    switch_to(ctx, &rel, "rollback", "rollback")?;
    metrics::update(&ctx.s, |c| {
        *c.rollbacks.entry(format!("{svc}|manual")).or_default() += 1;
    });
    state::record_history(
        &ctx.s,
        &json!({"time": now(), "op": "rollback", "result": "success", "service": svc.as_str(),
                "from": cur.as_str(), "to": target.as_str()}),
    );
    Ok(rel)
}

pub fn remove(ctx: &Ctx, svc: &ServiceName) -> Result<()> {
    let _lock = lock::acquire(&ctx.s.raw.lock_path, ctx.s.lock_timeout)?;
    if !state::service_dir(&ctx.s, svc).exists() {
        return Err(Refused::Other(format!("no service {svc} is deployed here")).into());
    }
    let mut rec = JournalRecord {
        tx: tx_id(),
        op: "remove".into(),
        capsule: state::owner(&ctx.s, svc)
            .map(|c| c.to_string())
            .unwrap_or_default(),
        new: None,
        services: vec![JournalService {
            name: svc.to_string(),
            old_current: state::current(&ctx.s, svc).map(|r| r.to_string()),
            old_previous: state::previous(&ctx.s, svc).map(|r| r.to_string()),
        }],
        step: Step::Begin,
        version: None,
    };
    rec.write(&ctx.s, Step::Begin)?;
    remove_service(ctx, svc)?;
    rec.finish(&ctx.s)?;
    state::record_history(
        &ctx.s,
        &json!({"time": now(), "op": "remove", "service": svc.as_str()}),
    );
    metrics::update(&ctx.s, |_| {});
    Ok(())
}

/// Stops and removes a service's units and links; idempotent (recover
/// repeats it after a crash). Releases stay until gc.
fn remove_service(ctx: &Ctx, svc: &ServiceName) -> Result<()> {
    let s = &ctx.s;
    let mut units_to_stop: BTreeSet<String> = ctx
        .sd
        .list_instances(&format!("dickbox-{svc}@*.service"))
        .into_iter()
        .collect();
    for which in ["current", "previous"] {
        if let Some(id) = state::link_release(s, svc, which) {
            units_to_stop.insert(units::instance_name(svc, &id));
        }
    }
    for u in &units_to_stop {
        let _ = ctx.sd.disable(u);
        ctx.sd.stop(u).with_context(|| format!("stop {u}"))?;
        ctx.sd.reset_failed(u);
    }
    let prefix = format!("dickbox-{svc}@");
    if let Ok(rd) = fs::read_dir(&s.raw.unit_dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&prefix) && n.ends_with(".service.d") {
                fs::remove_dir_all(e.path())
                    .with_context(|| format!("remove {}", e.path().display()))?;
            }
        }
    }
    crate::fsops::remove_if_exists(&s.raw.unit_dir.join(units::template_name(svc)))?;
    ctx.sd.daemon_reload()?;
    crate::fsops::remove_if_exists(&s.raw.runtime_dir.join(svc.as_str()).join("current.sock"))?;
    let dir = state::service_dir(s, svc);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
        crate::fsops::sync_dir(&s.services_dir())?;
    }
    tracing::info!(service = %svc, "service removed; its releases stay until gc");
    Ok(())
}

/// Removes releases that are neither current nor previous of any service,
/// keeping the `keep` newest of each capsule.
pub fn gc(ctx: &Ctx, keep: usize) -> Result<Vec<ReleaseId>> {
    let _lock = lock::acquire(&ctx.s.raw.lock_path, ctx.s.lock_timeout)?;
    gc_locked(ctx, keep)
}

fn gc_locked(ctx: &Ctx, keep: usize) -> Result<Vec<ReleaseId>> {
    let s = &ctx.s;
    stage::clean_staging(s)?;
    let mut referenced = BTreeSet::new();
    for svc in state::services(s) {
        for which in ["current", "previous"] {
            if let Some(id) = state::link_release(s, &svc, which) {
                referenced.insert(id);
            }
        }
    }
    for (_, r) in state::journal_records(s) {
        if let Ok(r) = r {
            referenced.extend(r.new.and_then(|n| ReleaseId::parse(&n).ok()));
        }
    }
    let mut by_capsule: BTreeMap<String, Vec<(SystemTime, Release)>> = BTreeMap::new();
    for e in fs::read_dir(s.releases_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(id) = ReleaseId::parse(&e.file_name().to_string_lossy()) else {
            continue;
        };
        let mtime = e
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(UNIX_EPOCH);
        match stage::load_release(s, &id) {
            Ok(rel) => by_capsule
                .entry(rel.manifest.name.to_string())
                .or_default()
                .push((mtime, rel)),
            Err(e) => {
                tracing::warn!(release = %id, error = %format!("{e:#}"), "skipping an unreadable release")
            }
        }
    }
    let mut removed = Vec::new();
    for (_, mut rels) in by_capsule {
        rels.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (i, (_, rel)) in rels.into_iter().enumerate() {
            if referenced.contains(&rel.id) || i < keep {
                continue;
            }
            for svc in &rel.manifest.services {
                let d = units::dropin_dir(s, &svc.name, &rel.id);
                if d.exists() {
                    fs::remove_dir_all(&d).with_context(|| format!("remove {}", d.display()))?;
                }
            }
            stage::make_writable(&rel.path);
            fs::remove_dir_all(&rel.path)
                .with_context(|| format!("remove {}", rel.path.display()))?;
            tracing::info!(release = %rel.id, capsule = %rel.manifest.name, version = %rel.manifest.version, "release removed by gc");
            removed.push(rel.id);
        }
    }
    if !removed.is_empty() {
        crate::fsops::sync_dir(&s.releases_dir())?;
    }
    Ok(removed)
}

/// Finishes or undoes whatever a crash interrupted, then makes sure every
/// service's current instance runs and its `current.sock` link exists (after
/// a reboot `/run` is empty).
///
/// With `boot`, starts are queued without waiting: `dickbox-recover.service`
/// runs before the service instances, which are ordered after it, so waiting
/// for their start from inside it would deadlock until the timeout.
pub fn recover(ctx: &Ctx, boot: bool) -> Result<Vec<String>> {
    let _lock = lock::acquire(&ctx.s.raw.lock_path, ctx.s.lock_timeout)?;
    let s = &ctx.s;
    let mut report = Vec::new();
    stage::clean_staging(s)?;
    for (path, rec) in state::journal_records(s) {
        let rec =
            rec.with_context(|| format!("journal record {} is unreadable", path.display()))?;
        let line = recover_record(ctx, &rec)?;
        tracing::info!(tx = %rec.tx, op = %rec.op, step = state::step_name(rec.step), outcome = %line, "recovered");
        report.push(line);
        rec.finish(s)?;
    }
    for svc in state::services(s) {
        let Some(cur) = state::current(s, &svc) else {
            continue;
        };
        let Ok(rel) = stage::load_release(s, &cur) else {
            report.push(format!("{svc}: current release {cur} is missing"));
            continue;
        };
        let Some(m) = rel.manifest.service(svc.as_str()) else {
            continue;
        };
        match m.listen {
            Listen::Unix => state::set_front(s, &svc, &cur)?,
            // HAProxy starts from its own config after a reboot, which may
            // point at the other colour; point it at the current release.
            // HAProxy may not be up yet at boot: report, do not fail.
            Listen::Tcp => {
                if let Err(e) = crate::haproxy::switch(s, &svc, &cur) {
                    report.push(format!("{svc}: HAProxy not pointed at {cur} yet: {e:#}"));
                }
            }
        }
        let unit = units::instance_name(&svc, &cur);
        if !ctx.sd.is_active(&unit) {
            ctx.sd.reset_failed(&unit);
            let started = if boot {
                ctx.sd.start_no_block(&unit)
            } else {
                ctx.sd.start(&unit, m.startup_timeout)
            };
            match started {
                Ok(()) => report.push(format!("{svc}: started {unit}")),
                Err(e) => report.push(format!("{svc}: {unit} does not start: {e:#}")),
            }
        }
    }
    Ok(report)
}

fn recover_record(ctx: &Ctx, rec: &JournalRecord) -> Result<String> {
    let s = &ctx.s;
    if rec.op == "remove" {
        for js in &rec.services {
            remove_service(ctx, &ServiceName::parse(&js.name)?)?;
        }
        return Ok(format!(
            "finished removing {}",
            rec.services
                .iter()
                .map(|j| j.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let new = ReleaseId::parse(rec.new.as_deref().unwrap_or(""))?;
    let rel = stage::load_release(s, &new)?;
    let all_switched = rec.services.iter().all(|js| {
        ServiceName::parse(&js.name)
            .map(|n| state::current(s, &n).as_ref() == Some(&new))
            .unwrap_or(false)
    });
    if rec.step >= Step::Switched || (rec.step == Step::Switching && all_switched) {
        // The switch happened: finish it (the front is re-pointed below too).
        apply_switch(ctx, &rel, rec)?;
        ctx.sd.daemon_reload()?;
        finish_switch(ctx, &rel, rec)?;
        if let Some(v) = &rec.version
            && rec.op == "deploy"
        {
            state::raise_floor(s, &rel.manifest.name, &semver::Version::parse(v)?)?;
        }
        return Ok(format!(
            "finished the {} of {} to release {new}",
            rec.op, rec.capsule
        ));
    }
    // Not switched (or switched halfway): undo. Restore every service's links
    // and front to what they were, stop the new instances.
    for js in &rec.services {
        let svc = ServiceName::parse(&js.name)?;
        let old = js
            .old_current
            .as_deref()
            .map(ReleaseId::parse)
            .transpose()?;
        let prev = js
            .old_previous
            .as_deref()
            .map(ReleaseId::parse)
            .transpose()?;
        state::set_link(s, &svc, "current", old.as_ref())?;
        state::set_link(s, &svc, "previous", prev.as_ref())?;
        if let Some(o) = &old {
            if rel.manifest.service(svc.as_str()).map(|m| m.listen) == Some(Listen::Tcp) {
                crate::haproxy::switch(s, &svc, o)?;
            } else {
                state::set_front(s, &svc, o)?;
            }
        }
        let unit = units::instance_name(&svc, &new);
        if old.as_ref() != Some(&new) {
            let _ = ctx.sd.disable(&unit);
            let _ = ctx.sd.stop(&unit);
            ctx.sd.reset_failed(&unit);
        }
        if old.is_none() {
            // A first deploy that never switched: forget the service again.
            let dir = state::service_dir(s, &svc);
            let _ = fs::remove_dir_all(dir);
        }
    }
    Ok(format!(
        "undid the unfinished {} of {} to release {new}",
        rec.op, rec.capsule
    ))
}

/// `status`: per service, its capsule, releases and whether it runs.
pub fn status(ctx: &Ctx, only: Option<&ServiceName>) -> Result<serde_json::Value> {
    let s = &ctx.s;
    let mut out = Vec::new();
    for svc in state::services(s) {
        if only.is_some_and(|o| o != &svc) {
            continue;
        }
        let cur = state::current(s, &svc);
        let prev = state::previous(s, &svc);
        let version = cur
            .as_ref()
            .and_then(|c| stage::load_release(s, c).ok())
            .map(|r| r.manifest.version.to_string());
        let unit = cur.as_ref().map(|c| units::instance_name(&svc, c));
        let state_ = unit.as_ref().map(|u| ctx.sd.active_state(u));
        out.push(json!({
            "service": svc.as_str(),
            "capsule": state::owner(s, &svc).map(|c| c.to_string()),
            "current": cur.map(|c| c.to_string()),
            "version": version,
            "previous": prev.map(|c| c.to_string()),
            "unit": unit,
            "active_state": state_,
        }));
    }
    if let Some(o) = only
        && out.is_empty()
    {
        return Err(Refused::Other(format!("no service {o} is deployed here")).into());
    }
    let pending: Vec<String> = state::journal_records(s)
        .into_iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    Ok(json!({"services": out, "unfinished_operations": pending}))
}

/// `list`: every kept release.
pub fn list(ctx: &Ctx) -> Result<serde_json::Value> {
    let s = &ctx.s;
    let mut refs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for svc in state::services(s) {
        for which in ["current", "previous"] {
            if let Some(id) = state::link_release(s, &svc, which) {
                refs.entry(id.to_string())
                    .or_default()
                    .push(format!("{which} of {svc}"));
            }
        }
    }
    let mut out = Vec::new();
    for e in fs::read_dir(s.releases_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(id) = ReleaseId::parse(&e.file_name().to_string_lossy()) else {
            continue;
        };
        let rel = stage::load_release(s, &id).ok();
        out.push(json!({
            "release": id.as_str(),
            "capsule": rel.as_ref().map(|r| r.manifest.name.to_string()),
            "version": rel.as_ref().map(|r| r.manifest.version.to_string()),
            "used_as": refs.get(id.as_str()).cloned().unwrap_or_default(),
        }));
    }
    out.sort_by(|a, b| {
        a["capsule"]
            .as_str()
            .cmp(&b["capsule"].as_str())
            .then(a["version"].as_str().cmp(&b["version"].as_str()))
    });
    Ok(json!({"releases": out}))
}
