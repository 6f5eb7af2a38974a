//! End-to-end tests of the units in real systemd (PID 1 in a throwaway
//! sandbox, see tests/sandbox/README.md), with the keeper built for tests so
//! that its simulated GPU backend is compiled in. The units are the shipped
//! files; test drop-ins only point ExecStart= at the test build, switch the
//! simulation on, shorten the timings, and replace the MPS control daemon
//! (which needs a GPU) with a stand-in that listens on the control socket.
//!
//! Root only: as another user, or where a sandbox cannot run, each test prints
//! "skipped: <reason>" and passes.

#[path = "../../../tests/sandbox/rust/sandbox_guard.rs"]
mod sandbox_guard;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use sandbox_guard::{INSIDE_BIN, Sandbox};

const GPU: &str = "GPU-8ca2c6c4-3b2e-0b9a-1a6b-7e2c5d9f0a11";
const GPU2: &str = "GPU-11111111-2222-3333-4444-555555555555";
const MIG: &str = "MIG-0f1e2d3c-4b5a-6978-8a9b-acbdcedf0011";
const MESSAGE_ID: &str = "63a5624c37a14fab9221e4d031a077be";

fn bin_dir() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_soliton-mps-keeper"))
        .parent()
        .expect("binary has a folder")
}

fn sh(sb: &Sandbox, script: &str) -> Output {
    sb.exec(&["/bin/sh", "-c", script])
}

fn sh_ok(sb: &Sandbox, script: &str) -> String {
    let out = sh(sb, script);
    assert!(
        out.status.success(),
        "{script}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn show(sb: &Sandbox, unit: &str, prop: &str) -> String {
    sh_ok(sb, &format!("systemctl show -p {prop} --value '{unit}'"))
        .trim()
        .to_owned()
}

fn journal(sb: &Sandbox, unit: &str) -> String {
    sh_ok(sb, &format!("journalctl --no-pager -o cat -u '{unit}'"))
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn keeper(uuid: &str) -> String {
    format!("soliton-mps@{uuid}.service")
}

/// Installs the shipped units, the simulated GPUs and the test drop-ins.
fn install(sb: &Sandbox) {
    let units = concat!(env!("CARGO_MANIFEST_DIR"), "/../../systemd");
    sh_ok(
        sb,
        &format!(
            "cp {units}/soliton-mps@.service {units}/soliton-mps-control@.service \
             /etc/systemd/system/"
        ),
    );
    sh_ok(
        sb,
        &format!(
            "mkdir -p /srv/sim && printf '%s\\n' 'gpu {GPU} 0 Test-only Simulated GPU' \
             'gpu {GPU2} 1 Test-only Second GPU' 'mig {MIG} {GPU2} 1 0 Test-only MIG 1g.10gb' \
             > /srv/sim/gpus && chown -R dickbox-svc:dickbox-svc /srv/sim"
        ),
    );
    // What docs/soliton-mps-keeper.md asks tmpfiles.d to do for the metrics
    // folder: group dickbox-svc may add files, nobody may remove others'.
    sh_ok(
        sb,
        "chgrp dickbox-svc /var/lib/prometheus/node-exporter && \
         chmod 1775 /var/lib/prometheus/node-exporter",
    );
    sh_ok(
        sb,
        &format!(
            "mkdir -p /etc/systemd/system/soliton-mps@.service.d && \
             cat > /etc/systemd/system/soliton-mps@.service.d/test.conf <<'EOF'
[Unit]
ConditionPathExists=
[Service]
ExecStart=
ExecStart={INSIDE_BIN}/soliton-mps-keeper run %i
Environment=SOLITON_MPS_KEEPER_SIMULATED_GPU=/srv/sim
Environment=DICKBOX_KEEPER_INTERVAL=300ms DICKBOX_KEEPER_KERNEL_DEADLINE=200ms
Environment=DICKBOX_KEEPER_PIPE_WAIT=1s
ReadWritePaths=/srv/sim
WatchdogSec=2s
RestartSec=200ms
EOF
mkdir -p /etc/systemd/system/soliton-mps-control@.service.d && \
cat > /etc/systemd/system/soliton-mps-control@.service.d/test.conf <<'EOF'
[Unit]
ConditionPathExists=
[Service]
ExecStart=
ExecStart=/usr/bin/python3 -c 'import os, socket, time; s = socket.socket(socket.AF_UNIX); s.bind(os.environ[\"CUDA_MPS_PIPE_DIRECTORY\"] + \"/control\"); s.listen(); time.sleep(86400)'
ExecStop=
EOF
systemctl daemon-reload"
        ),
    );
}

#[test]
fn units_skip_without_a_driver_then_start_per_uuid_and_ping_after_kernels() {
    let Some(sb) = Sandbox::up("mps-units", bin_dir()) else {
        return;
    };
    let units = concat!(env!("CARGO_MANIFEST_DIR"), "/../../systemd");
    sh_ok(
        &sb,
        &format!(
            "cp {units}/soliton-mps@.service {units}/soliton-mps-control@.service \
             /etc/systemd/system/ && systemctl daemon-reload"
        ),
    );
    // No /dev/nvidiactl in the sandbox: skipped, not failed, no restarts.
    sh_ok(&sb, &format!("systemctl start {}", keeper(GPU)));
    assert_eq!(show(&sb, &keeper(GPU), "ConditionResult"), "no");
    assert_eq!(show(&sb, &keeper(GPU), "ActiveState"), "inactive");
    assert_eq!(show(&sb, &keeper(GPU), "NRestarts"), "0");

    install(&sb);
    let unit = keeper(GPU);
    sh_ok(&sb, &format!("systemctl start {unit}"));
    assert_eq!(show(&sb, &unit, "ActiveState"), "active");

    // %i carries the UUID verbatim into the command line and the environment.
    let env = show(&sb, &unit, "Environment");
    assert!(
        env.contains(&format!("CUDA_VISIBLE_DEVICES={GPU}")),
        "{env}"
    );
    assert!(
        env.contains(&format!(
            "CUDA_MPS_PIPE_DIRECTORY=/run/soliton-mps/{GPU}/pipe"
        )),
        "{env}"
    );
    let status = show(&sb, &unit, "StatusText");
    assert!(
        status.starts_with("kernel ") && status.contains(GPU),
        "{status}"
    );

    let pid = show(&sb, &unit, "MainPID");
    assert_eq!(
        sh_ok(&sb, &format!("ps -o user= -p {pid}")).trim(),
        "dickbox-svc"
    );
    assert_eq!(
        sh_ok(&sb, &format!("stat -c %U /run/soliton-mps/{GPU}/pipe")).trim(),
        "dickbox-svc"
    );

    // Still active well past WatchdogSec=2s, same process: pings arrive.
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(show(&sb, &unit, "ActiveState"), "active");
    assert_eq!(show(&sb, &unit, "MainPID"), pid);
    assert_eq!(show(&sb, &unit, "NRestarts"), "0");

    let metrics = sh_ok(
        &sb,
        &format!("cat /var/lib/prometheus/node-exporter/soliton-mps-keeper-{GPU}.prom"),
    );
    assert!(
        metrics.contains(&format!("soliton_mps_keeper_up{{gpu=\"{GPU}\"}} 1")),
        "{metrics}"
    );
    let log = journal(&sb, &unit);
    assert!(log.contains("first kernel completed; ready"), "{log}");
    // Structured fields reach the journal under their own names.
    let by_field = sh_ok(&sb, &format!("journalctl --no-pager -o cat GPU={GPU}"));
    assert!(by_field.contains("resolved GPU"), "{by_field}");

    // A modern MIG UUID is a valid instance name.
    sh_ok(&sb, &format!("systemctl start {}", keeper(MIG)));
    assert_eq!(show(&sb, &keeper(MIG), "ActiveState"), "active");
    assert!(journal(&sb, &keeper(MIG)).contains("NVML index 1"));

    let report = sh(
        &sb,
        &format!(
            "systemd-analyze verify /etc/systemd/system/soliton-mps@.service 2>&1; \
             systemd-analyze security --no-pager {unit} 2>&1 | tail -1; \
             systemd-analyze security --no-pager soliton-mps-control@{GPU}.service 2>&1 | tail -1"
        ),
    );
    eprintln!(
        "systemd-analyze:\n{}",
        String::from_utf8_lossy(&report.stdout).trim()
    );
}

#[test]
fn deadline_sticky_error_and_stuck_call_each_end_in_a_restart() {
    let Some(sb) = Sandbox::up("mps-faults", bin_dir()) else {
        return;
    };
    install(&sb);
    let unit = keeper(GPU);
    let control = format!("soliton-mps-control@{GPU}.service");
    sh_ok(&sb, &format!("systemctl start {unit}"));
    let control_pid = show(&sb, &control, "MainPID");

    for (n, fault, code, what) in [
        (1, "slow 3000", Some(9), "missed its deadline"),
        (2, "sticky", Some(10), "CUDA_ERROR_ILLEGAL_ADDRESS"),
        (3, "hang", None, "Watchdog timeout"),
    ] {
        let pid = show(&sb, &unit, "MainPID");
        sh_ok(&sb, &format!("echo '{fault}' > /srv/sim/fault"));
        let took = wait_for(Duration::from_secs(10), || {
            show(&sb, &unit, "NRestarts") == n.to_string()
                && show(&sb, &unit, "ActiveState") == "active"
        })
        .unwrap_or_else(|| panic!("{fault}: no restart\n{}", journal(&sb, &unit)));
        assert_ne!(show(&sb, &unit, "MainPID"), pid, "{fault}");
        eprintln!("{fault}: restarted and ready again {took:?} after the fault was set");
        let log = journal(&sb, &unit);
        assert!(log.contains(what), "{fault}: {log}");
        if let Some(code) = code {
            let alerts = sh_ok(
                &sb,
                &format!("journalctl --no-pager -o verbose MESSAGE_ID={MESSAGE_ID}"),
            );
            assert!(
                alerts.contains(&format!("EXIT_CODE={code}")),
                "{fault}: {alerts}"
            );
        }
    }
    // The shipped catalog explains the alert in `journalctl -x`.
    let units = concat!(env!("CARGO_MANIFEST_DIR"), "/../../systemd");
    sh_ok(
        &sb,
        &format!(
            "mkdir -p /usr/lib/systemd/catalog && \
             cp {units}/soliton-mps-keeper.catalog /usr/lib/systemd/catalog/ && \
             journalctl --update-catalog"
        ),
    );
    let explained = sh_ok(
        &sb,
        &format!("journalctl --no-pager -x MESSAGE_ID={MESSAGE_ID}"),
    );
    assert!(
        explained.contains(&format!(
            "Subject: MPS keeper for {GPU} failed (exit code 9)"
        )),
        "{explained}"
    );

    // The keeper's restarts never touched the MPS control daemon.
    assert_eq!(show(&sb, &control, "MainPID"), control_pid);
}

#[test]
fn missing_gpu_old_mig_name_and_bad_pipe_folder_are_reported() {
    let Some(sb) = Sandbox::up("mps-errors", bin_dir()) else {
        return;
    };
    install(&sb);

    // A UUID that is not on the host: clear error, and no restart loop.
    let missing = keeper("GPU-99999999-9999-9999-9999-999999999999");
    assert!(
        !sh(&sb, &format!("systemctl start {missing}"))
            .status
            .success()
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(show(&sb, &missing, "ExecMainStatus"), "5");
    assert_eq!(show(&sb, &missing, "NRestarts"), "0");
    assert!(journal(&sb, &missing).contains("no GPU or MIG device GPU-99999999"));

    // The old MIG form is no unit name, and the keeper names the modern one.
    let old = format!("MIG-{GPU2}/1/0");
    assert!(
        !sh(&sb, &format!("systemctl start 'soliton-mps@{old}.service'"))
            .status
            .success()
    );
    let out = sh(
        &sb,
        &format!(
            "systemd-run --wait --pipe --quiet -p User=dickbox-svc \
             -E SOLITON_MPS_KEEPER_SIMULATED_GPU=/srv/sim \
             {INSIDE_BIN}/soliton-mps-keeper run '{old}'"
        ),
    );
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("use soliton-mps@{MIG}.service")),
        "{err}"
    );

    // A control daemon that never opens its socket: reported after pipe_wait.
    // (The instance drop-in sorts after the template's test.conf, so it wins.)
    sh_ok(
        &sb,
        &format!(
            "mkdir -p '/etc/systemd/system/soliton-mps-control@{GPU2}.service.d' && \
             printf '[Service]\\nExecStart=\\nExecStart=/bin/sleep 86400\\n' \
             > '/etc/systemd/system/soliton-mps-control@{GPU2}.service.d/zz-nosocket.conf' && \
             systemctl daemon-reload"
        ),
    );
    let unit2 = keeper(GPU2);
    assert!(
        !sh(&sb, &format!("systemctl start {unit2}"))
            .status
            .success()
    );
    let log = journal(&sb, &unit2);
    assert!(
        log.contains(&format!(
            "MPS pipe folder /run/soliton-mps/{GPU2}/pipe has no control socket"
        )),
        "{log}"
    );
    sh_ok(&sb, &format!("systemctl stop {unit2}"));

    // A pipe folder the keeper's user cannot enter.
    let control = format!("soliton-mps-control@{GPU}.service");
    sh_ok(&sb, &format!("systemctl start {control}"));
    // Only once the stand-in listens: it cannot bind in a folder it cannot enter.
    let listening = wait_for(Duration::from_secs(5), || {
        sh(&sb, &format!("test -S /run/soliton-mps/{GPU}/pipe/control"))
            .status
            .success()
    });
    assert!(listening.is_some(), "{}", journal(&sb, &control));
    sh_ok(
        &sb,
        &format!(
            "chown root:root /run/soliton-mps/{GPU}/pipe && \
             chmod 0700 /run/soliton-mps/{GPU}/pipe"
        ),
    );
    let started = sh(&sb, &format!("systemctl start {}", keeper(GPU)));
    let log = journal(&sb, &keeper(GPU));
    assert!(!started.status.success(), "{log}");
    assert!(log.contains("is unreachable: Permission denied"), "{log}");
}
