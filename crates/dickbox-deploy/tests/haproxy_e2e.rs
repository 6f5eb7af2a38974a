//! A `listen: tcp` service behind a real HAProxy (Debian's `haproxy`), in real
//! systemd (PID 1 in a throwaway sandbox): the capsule runs gunicorn on the
//! port dickbox-deploy hands it in `PORT` (blue or green of `deploy.ports`),
//! and the switch goes through HAProxy's runtime API. v1 is deployed by URL
//! from a file server on the sandbox's own loopback; v2 under a bounded load
//! through HAProxy with zero failed requests; a failing v3 is refused while v2
//! keeps serving; rollback returns to v1. Needs root; without it the test says
//! it was skipped and why.

#[path = "../../../tests/sandbox/rust/sandbox_guard.rs"]
mod sandbox_guard;

mod e2e;

use e2e::{EXAMPLE, Host, bin_dir, text};

use std::fs;
use std::path::Path;

use capsule::minisig::{SigningKey, generate_keypair};
use capsule::pack::{self, PackOptions};
use capsule::trusted::TrustedComment;
use sandbox_guard::{INSIDE_BIN, Sandbox};

const FRONT: u16 = 18080;
const BLUE: u16 = 18081;
const GREEN: u16 = 18082;
const REPO: u16 = 18090;

/// The example app, turned into a `listen: tcp` service that binds
/// 127.0.0.1:$PORT; `health` goes into app/VERSION ("broken" fails /healthz).
fn build_capsule(out: &Path, key: &SigningKey, version: &str, health: &str) {
    let src = tempfile::tempdir().unwrap();
    let cp = std::process::Command::new("cp")
        .args(["-r", &format!("{EXAMPLE}/."), src.path().to_str().unwrap()])
        .status()
        .unwrap();
    assert!(cp.success());
    let manifest = fs::read_to_string(src.path().join("capsule.yml"))
        .unwrap()
        .replace("version: 1.0.0", &format!("version: {version}"))
        .replace("listen: unix", "listen: tcp");
    assert!(manifest.contains("listen: tcp"), "{manifest}");
    fs::write(
        src.path().join("bin/start.sh"),
        "#!/bin/sh\n\
         # PORT is this instance's own port (blue or green), set by its unit.\n\
         set -eu\n\
         exec gunicorn --workers 2 --graceful-timeout 5 \
         --bind \"127.0.0.1:${PORT:?PORT is not set}\" \
         --pythonpath \"$(dirname \"$0\")/../app\" app:application\n",
    )
    .unwrap();
    fs::write(src.path().join("app/VERSION"), format!("{health}\n")).unwrap();
    let m = capsule::manifest::Manifest::parse(&manifest, "capsule.yml").unwrap();
    let text = capsule::manifest::with_format_line(&manifest, &m);
    let entries = pack::scan_tree(src.path()).unwrap();
    let name = format!("hello-api-{version}.capsule.tar.zst");
    let f = fs::File::create(out.join(&name)).unwrap();
    pack::pack(f, &text, &entries, PackOptions { mtime: 0 }, &mut |_| {}).unwrap();
    let bytes = fs::read(out.join(&name)).unwrap();
    let tc = TrustedComment {
        name: m.name.clone(),
        version: m.version.clone(),
        sha256: capsule::digest::sha256_hex(&bytes),
        signed: 1_780_000_000,
    };
    fs::write(
        out.join(format!("{name}.minisig")),
        key.sign(&bytes[..], &tc.to_string()).unwrap(),
    )
    .unwrap();
}

/// HAProxy in front: one frontend, the service's backend with the blue and
/// green servers, the runtime API on a unix socket. Green starts disabled so
/// that before the first deploy only one server is in rotation.
fn haproxy_cfg() -> String {
    format!(
        "global\n\
         \x20 stats socket /run/dickbox-haproxy.sock mode 600 level admin\n\
         \x20 maxconn 512\n\
         defaults\n\
         \x20 mode http\n\
         \x20 timeout connect 2s\n\
         \x20 timeout client 10s\n\
         \x20 timeout server 10s\n\
         frontend front\n\
         \x20 bind 127.0.0.1:{FRONT}\n\
         \x20 default_backend dickbox-hello-api\n\
         backend dickbox-hello-api\n\
         \x20 server blue 127.0.0.1:{BLUE}\n\
         \x20 server green 127.0.0.1:{GREEN} disabled\n"
    )
}

/// A bounded load generator through HAProxy: until /results/stop exists (or
/// 60 s / 50000 requests), then counts go to /results/load.json.
const LOAD_PY: &str = r#"
import json, os, socket, sys, time
port = int(sys.argv[1])
ok = fail = 0
errors = []
seen = {}
start = time.time()
while not os.path.exists("/results/stop") and time.time() - start < 60 and ok + fail < 50000:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        if data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200"):
            ok += 1
            body = data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")
            v = body.split(" from ", 1)[-1].split(" ", 1)[0]
            seen[v] = seen.get(v, 0) + 1
        else:
            fail += 1
            errors.append(data[:60].decode(errors="replace"))
    except Exception as e:
        fail += 1
        errors.append(repr(e))
json.dump({"ok": ok, "fail": fail, "versions": seen, "errors": errors[:10]},
          open("/results/load.json", "w"))
"#;

/// Asks HAProxy's runtime API for the backend's server states.
const SHOW_SERVERS: &str = "/usr/bin/python3 -c \"import socket; \
s = socket.socket(socket.AF_UNIX); s.connect('/run/dickbox-haproxy.sock'); \
s.sendall(b'show servers state dickbox-hello-api\\n'); print(s.makefile().read())\"";

impl Host<'_> {
    /// What HAProxy's frontend answers.
    fn get(&self) -> String {
        let o = self.sh(&format!("curl -sS --max-time 5 http://127.0.0.1:{FRONT}/"));
        if !o.status.success() {
            let diag = self.sh(
                &format!("{SHOW_SERVERS}; systemctl status --no-pager --full 'dickbox-hello-api@*' haproxy-front; \
                 journalctl --no-pager -n 40 -u 'dickbox-hello-api@*' -u haproxy-front"),
            );
            panic!("HAProxy does not answer: {}\n{}", text(&o), text(&diag));
        }
        text(&o)
    }

    /// HAProxy's view: `server admin-state operational-state` lines.
    fn servers(&self) -> String {
        self.ok(SHOW_SERVERS)
    }
}

/// Signed capsules v1..v3, the load generator and the HAProxy config, in a
/// folder bound at /results.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (pk, sk, _) = generate_keypair(None).unwrap();
    fs::write(dir.path().join("ci.pub"), pk).unwrap();
    fs::write(dir.path().join("ci.key"), sk).unwrap();
    let key = SigningKey::load(&dir.path().join("ci.key"), None).unwrap();
    build_capsule(dir.path(), &key, "1.0.0", "1.0.0");
    build_capsule(dir.path(), &key, "2.0.0", "2.0.0");
    build_capsule(dir.path(), &key, "3.0.0", "broken");
    fs::write(dir.path().join("load.py"), LOAD_PY).unwrap();
    fs::write(dir.path().join("haproxy.cfg"), haproxy_cfg()).unwrap();
    dir
}

impl Host<'_> {
    /// Loopback up, HAProxy and a capsule file server started (both as
    /// transient units, so they go with the sandbox).
    fn start_front(&self) {
        // The sandbox has its own network namespace: bring its loopback up.
        self.ok(&format!(
            "ip link set lo up && \
             haproxy -c -q -f /results/haproxy.cfg && \
             systemd-run --quiet --unit=haproxy-front /usr/sbin/haproxy -db -f /results/haproxy.cfg && \
             systemd-run --quiet --unit=capsule-repo /usr/bin/python3 -m http.server \
               --bind 127.0.0.1 --directory /results {REPO} && \
             for i in $(seq 100); do [ -S /run/dickbox-haproxy.sock ] && \
               curl -s -o /dev/null http://127.0.0.1:{REPO}/ && exit 0; sleep 0.1; done; exit 1"
        ));
    }

    /// The binary, the trusted key and a config with the port pair.
    fn install(&self) {
        self.ok(&format!(
            "cp {INSIDE_BIN}/dickbox-deploy /usr/bin/dickbox-deploy && \
             mkdir -p /etc/dickbox/trust/minisign && cp /results/ci.pub /etc/dickbox/trust/minisign/ci.pub && \
             printf 'deploy:\\n  drain: 1s\\n  haproxy_socket: /run/dickbox-haproxy.sock\\n  ports:\\n    hello-api: [{BLUE}, {GREEN}]\\n' \
               > /etc/dickbox/dickbox.yml"
        ));
        self.start_front();
    }
}

#[test]
fn tcp_service_behind_haproxy_switches_with_zero_failed_requests() {
    let dir = fixture();
    let bind = format!("{}:/results", dir.path().display());
    let Some(sb) = Sandbox::up_with("deploy-haproxy", &bin_dir(), &[bind]) else {
        return;
    };
    let h = Host { sb: &sb };
    h.install();

    // v1 by URL: downloaded from the sandbox's loopback, deployed on blue.
    let o = h.deploy(&format!(
        "deploy http://127.0.0.1:{REPO}/hello-api-1.0.0.capsule.tar.zst"
    ));
    assert!(o.status.success(), "deploy v1 by URL: {}", text(&o));
    assert!(h.get().starts_with("hello from 1.0.0"), "{}", h.get());
    h.ok("test -z \"$(ls -A /var/lib/dickbox/downloads)\"");
    let unit = h.ok("systemctl cat 'dickbox-hello-api@*.service' | grep PORT=");
    assert!(unit.contains(&format!("PORT={BLUE}")), "{unit}");

    // v2 under a bounded load through HAProxy: zero failed requests.
    h.ok(&format!(
        "rm -f /results/stop /results/load.json && \
         systemd-run --quiet --unit=loadgen /usr/bin/python3 /results/load.py {FRONT}"
    ));
    std::thread::sleep(std::time::Duration::from_millis(700));
    let o = h.deploy("deploy /results/hello-api-2.0.0.capsule.tar.zst");
    assert!(o.status.success(), "deploy v2: {}", text(&o));
    std::thread::sleep(std::time::Duration::from_millis(700));
    h.ok("touch /results/stop; for i in $(seq 100); do [ -e /results/load.json ] && exit 0; sleep 0.1; done; exit 1");
    let load: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("load.json")).unwrap()).unwrap();
    eprintln!("load through HAProxy during the v1 -> v2 switch: {load}");
    assert_eq!(load["fail"], 0, "failed requests during the switch: {load}");
    assert!(
        load["ok"].as_u64().unwrap() > 20,
        "too little load to mean anything: {load}"
    );
    assert!(
        load["versions"]["1.0.0"].as_u64().unwrap_or(0) > 0
            && load["versions"]["2.0.0"].as_u64().unwrap_or(0) > 0,
        "the load did not span the switch: {load}"
    );
    assert!(h.get().starts_with("hello from 2.0.0"), "{}", h.get());
    assert_eq!(h.active_instances().len(), 1, "{:?}", h.active_instances());
    let unit = h.ok("systemctl cat \"$(systemctl list-units --plain --no-legend --state=active 'dickbox-hello-api@*' | awk '{print $1}')\" | grep PORT=");
    assert!(unit.contains(&format!("PORT={GREEN}")), "{unit}");

    // v3 fails its health check: exit 4, v2 keeps serving through HAProxy.
    let o = h.deploy("deploy /results/hello-api-3.0.0.capsule.tar.zst");
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains("health check failed") && text(&o).contains("503"),
        "{}",
        text(&o)
    );
    for _ in 0..5 {
        assert!(h.get().starts_with("hello from 2.0.0"), "{}", h.get());
    }
    assert_eq!(h.active_instances().len(), 1, "{:?}", h.active_instances());

    // Rollback to v1 through the same switch.
    let o = h.deploy("rollback hello-api");
    assert!(o.status.success(), "rollback: {}", text(&o));
    for _ in 0..5 {
        assert!(h.get().starts_with("hello from 1.0.0"), "{}", h.get());
    }
    assert_eq!(h.active_instances().len(), 1, "{:?}", h.active_instances());
    eprintln!("HAProxy servers after rollback:\n{}", h.servers());
}

/// After a reboot HAProxy starts from its config file (blue in rotation), but
/// the current release may be on green: `recover` must point HAProxy at it
/// again.
#[test]
fn after_a_reboot_recover_points_haproxy_at_the_current_release() {
    let dir = fixture();
    let bind = format!("{}:/results", dir.path().display());
    let Some(sb) = Sandbox::up_with("deploy-haproxy-boot", &bin_dir(), &[bind]) else {
        return;
    };
    let h = Host { sb: &sb };
    h.install();
    for v in ["1.0.0", "2.0.0"] {
        let o = h.deploy(&format!("deploy /results/hello-api-{v}.capsule.tar.zst"));
        assert!(o.status.success(), "deploy {v}: {}", text(&o));
    }
    assert!(h.get().starts_with("hello from 2.0.0"), "{}", h.get());

    sb.reboot();
    h.ok("systemctl is-system-running --wait >/dev/null || true");
    h.start_front();
    let o = h.deploy("recover");
    assert!(o.status.success(), "recover: {}", text(&o));
    h.ok(&format!(
        "for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:{GREEN}/healthz && exit 0; sleep 0.1; done; exit 1"
    ));
    assert!(
        h.get().starts_with("hello from 2.0.0"),
        "after reboot: {}",
        h.get()
    );
}
