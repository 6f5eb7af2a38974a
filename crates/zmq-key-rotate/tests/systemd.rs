//! The units in real systemd (PID 1 in the project's sandbox): the timer's
//! next elapse, `Persistent=` catch-up from a backdated stamp, a manual run,
//! pruning, and the bus as a `Type=notify` service following a rotation.
//! Runs as root only; elsewhere it prints why it skipped.

#[path = "../../../tests/sandbox/rust/sandbox_guard.rs"]
mod sandbox_guard;

use std::path::Path;
use std::time::{Duration, Instant};

use sandbox_guard::{INSIDE_BIN, Sandbox};

const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../systemd");

fn sh(sb: &Sandbox, script: &str) -> String {
    let out = sb.exec(&["sh", "-c", script]);
    assert!(
        out.status.success(),
        "inside: {script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn generations(sb: &Sandbox) -> Vec<u64> {
    let out = sh(sb, "zmq-key-rotate list --json 2>/dev/null");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|g| g["generation"].as_u64().unwrap())
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn timer_service_and_bus_work_in_real_systemd() {
    let bin = Path::new(env!("CARGO_BIN_EXE_zmq-key-rotate"));
    let Some(sb) = Sandbox::up("zmq-rotate", bin.parent().unwrap()) else {
        return;
    };
    sh(
        &sb,
        &format!(
            "ln -sf {INSIDE_BIN}/zmq-key-rotate /usr/bin/zmq-key-rotate && \
             cp {UNITS}/zmq-key-rotate.service {UNITS}/zmq-key-rotate.timer \
                {UNITS}/zmq-bus.service /etc/systemd/system/ && \
             mkdir -p /var/lib/prometheus/node-exporter && systemctl daemon-reload"
        ),
    );
    let verify = sb.exec(&[
        "systemd-analyze",
        "verify",
        "/etc/systemd/system/zmq-key-rotate.service",
        "/etc/systemd/system/zmq-key-rotate.timer",
        "/etc/systemd/system/zmq-bus.service",
    ]);
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {verify:?}"
    );

    // The timer: next Monday between 03:00 and 03:15 (fixed per-host delay).
    sh(&sb, "systemctl enable --now zmq-key-rotate.timer");
    let next = sh(
        &sb,
        "systemctl show -p NextElapseUSecRealtime --value zmq-key-rotate.timer",
    );
    let list = sh(
        &sb,
        "systemctl list-timers --all --no-pager zmq-key-rotate.timer",
    );
    eprintln!("next elapse: {next}\n{list}");
    assert!(
        next.starts_with("Mon "),
        "next elapse {next:?} is not a Monday"
    );
    let time = next.split_whitespace().nth(2).unwrap();
    assert!(
        ("03:00:00"..="03:15:00").contains(&time),
        "next elapse {next:?} is not between 03:00 and 03:15"
    );
    assert!(list.contains("zmq-key-rotate.service"), "{list}");
    assert!(
        generations(&sb).is_empty(),
        "nothing may rotate before the timer fires"
    );

    // A manual run is the same rotation.
    sh(&sb, "systemctl start zmq-key-rotate.service");
    assert_eq!(generations(&sb), vec![1]);
    let journal = sh(
        &sb,
        "journalctl -u zmq-key-rotate.service -o json --no-pager \
         MESSAGE_ID=0c3b5e1a9f7d4e2b8a6c4d2e1f0a9b8c",
    );
    assert!(
        journal.contains("\"GENERATION\":\"1\""),
        "journal: {journal}"
    );
    let perms = sh(
        &sb,
        "stat -c '%a %G' /etc/dickbox/zmq/bus /etc/dickbox/zmq/bus/bus-1.key_secret",
    );
    assert_eq!(perms, "750 dickbox-svc\n600 root", "store permissions");

    // Persistent=true: a stamp older than the last Monday 03:00 makes the
    // timer elapse now (plus this host's fixed delay), not next week.
    let backdate = "systemctl stop zmq-key-rotate.timer && \
         touch -d '8 days ago' /var/lib/systemd/timers/stamp-zmq-key-rotate.timer && \
         systemctl start zmq-key-rotate.timer";
    sh(&sb, backdate);
    let catch_up = sh(
        &sb,
        "date -d \"$(systemctl show -p NextElapseUSecRealtime --value zmq-key-rotate.timer)\" +%s",
    );
    let now: u64 = sh(&sb, "date +%s").parse().unwrap();
    let catch_up: u64 = catch_up.parse().unwrap();
    assert!(
        catch_up <= now + 15 * 60 + 60,
        "catch-up elapse {catch_up} is not within the 15 min delay of now {now}"
    );
    // Without the delay (a test-only drop-in) the catch-up fires at once.
    // (This host's fixed delay may be small enough that it fired already.)
    wait_until("earlier catch-up settled", Duration::from_secs(5), || {
        sh(&sb, "systemctl is-active zmq-key-rotate.service || true") != "activating"
    });
    let before = *generations(&sb).last().unwrap();
    sh(
        &sb,
        &format!(
            "mkdir -p /etc/systemd/system/zmq-key-rotate.timer.d && \
             printf '[Timer]\\nRandomizedDelaySec=0\\n' \
               > /etc/systemd/system/zmq-key-rotate.timer.d/test.conf && \
             systemctl daemon-reload && {backdate}"
        ),
    );
    wait_until("persistent catch-up run", Duration::from_secs(30), || {
        generations(&sb).last() == Some(&(before + 1))
    });
    let last = before + 1;

    // Pruning through the unit: short grace and retention in a drop-in.
    sh(
        &sb,
        "mkdir -p /etc/systemd/system/zmq-key-rotate.service.d && \
         printf '[Service]\\nEnvironment=DICKBOX_ZMQ_GRACE=1s DICKBOX_ZMQ_RETENTION=1s\\n' \
           > /etc/systemd/system/zmq-key-rotate.service.d/test.conf && \
         systemctl daemon-reload && sleep 1.1 && systemctl start zmq-key-rotate.service",
    );
    assert_eq!(
        generations(&sb),
        vec![last, last + 1],
        "older generations pruned"
    );
    sh(&sb, "test ! -e /etc/dickbox/zmq/bus/bus-1.key_secret");
    let current = last + 1;

    // The bus: Type=notify, listening on the current generation, following a
    // rotation made while it runs.
    let started = sb.exec(&["systemctl", "start", "zmq-bus.service"]);
    assert!(
        started.status.success(),
        "zmq-bus.service did not start: {}",
        sh(&sb, "journalctl -b --no-pager -n 40 -u zmq-bus.service")
    );
    let state = sh(
        &sb,
        "systemctl show -p ActiveState,SubState --value zmq-bus.service",
    );
    assert_eq!(state, "active\nrunning");
    assert_eq!(
        sh(&sb, "readlink /run/dickbox/bus/current"),
        current.to_string()
    );
    let sock = sh(
        &sb,
        &format!("stat -c '%a %G' /run/dickbox/bus/{current}/sub.sock"),
    );
    assert_eq!(
        sock, "770 dickbox-svc",
        "socket reachable by the service group only"
    );
    sh(&sb, "systemctl start zmq-key-rotate.service");
    wait_until("bus follows rotation", Duration::from_secs(10), || {
        sb.exec(&["readlink", "/run/dickbox/bus/current"]).stdout
            == format!("{}\n", current + 1).as_bytes()
    });
    let security = sh(
        &sb,
        "systemd-analyze security --no-pager zmq-bus.service zmq-key-rotate.service | tail -n 3",
    );
    eprintln!("{security}");
    let state = sh(&sb, "systemctl show -p ActiveState --value zmq-bus.service");
    assert_eq!(state, "active", "bus still running after rotation");
}
