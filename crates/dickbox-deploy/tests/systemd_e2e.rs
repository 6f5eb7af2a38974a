//! dickbox-deploy in real systemd (PID 1 in a throwaway sandbox), with a real
//! HTTP server (gunicorn from the host's Debian package) in real signed
//! capsules: deploy, deploy under load with zero failed requests, a broken
//! version refused, rollback, gc, downgrade, reboot, remove, crashes at every
//! step followed by recover, and two deploys at once. Needs root; without it
//! each test says it was skipped and why.

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

const RECOVER_UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../systemd/dickbox-recover.service"
);

/// A results folder bound at /results with signed capsules of the example in
/// versions 1.0.0, 2.0.0 and 3.0.0 (3.0.0 fails its health check).
struct Fixture {
    dir: tempfile::TempDir,
}

fn build_capsule(
    out: &Path,
    key: &SigningKey,
    version: &str,
    health: &str,
    public_key: Option<&str>,
) {
    let src = tempfile::tempdir().unwrap();
    let cp = std::process::Command::new("cp")
        .args(["-r", &format!("{EXAMPLE}/."), src.path().to_str().unwrap()])
        .status()
        .unwrap();
    assert!(cp.success());
    let manifest = fs::read_to_string(src.path().join("capsule.yml"))
        .unwrap()
        .replace("version: 1.0.0", &format!("version: {version}"))
        // Unit-file metacharacters must reach the service unchanged.
        .replace(
            "environment: {GREETING: hello}",
            r#"environment: {GREETING: hello, ODD: 'a$b ${HOME} $$c 100% "q" \x'}"#,
        );
    let manifest = match public_key {
        Some(pk) => format!("{manifest}public_key: {pk}\n"),
        None => manifest,
    };
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

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (pk, sk, _) = generate_keypair(None).unwrap();
        fs::write(dir.path().join("ci.pub"), pk).unwrap();
        fs::write(dir.path().join("ci.key"), sk).unwrap();
        let key = SigningKey::load(&dir.path().join("ci.key"), None).unwrap();
        build_capsule(dir.path(), &key, "1.0.0", "1.0.0", None);
        build_capsule(dir.path(), &key, "2.0.0", "2.0.0", None);
        build_capsule(dir.path(), &key, "3.0.0", "broken", None);
        fs::write(dir.path().join("load.py"), LOAD_PY).unwrap();
        Fixture { dir }
    }

    fn bind(&self) -> String {
        format!("{}:/results", self.dir.path().display())
    }
}

/// A bounded load generator: requests through current.sock until /results/stop
/// exists (or 60 s / 50000 requests), then writes counts to /results/load.json.
const LOAD_PY: &str = r#"
import json, os, socket, time
ok = fail = 0
errors = []
start = time.time()
while not os.path.exists("/results/stop") and time.time() - start < 60 and ok + fail < 50000:
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect("/run/dickbox/hello-api/current.sock")
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
        else:
            fail += 1
            errors.append(data[:60].decode(errors="replace"))
    except Exception as e:
        fail += 1
        errors.append(repr(e))
json.dump({"ok": ok, "fail": fail, "errors": errors[:10]}, open("/results/load.json", "w"))
"#;

impl Host<'_> {
    /// What the front answers.
    fn get(&self) -> String {
        let o = self.sh(
            "curl -sS --max-time 5 --unix-socket /run/dickbox/hello-api/current.sock http://x/",
        );
        if !o.status.success() {
            let diag = self.sh(
                "ls -la /run/dickbox/hello-api; systemctl status --no-pager --full 'dickbox-hello-api@*'; \
                 journalctl --no-pager -n 40 -u 'dickbox-hello-api@*'",
            );
            panic!("the front does not answer: {}\n{}", text(&o), text(&diag));
        }
        text(&o)
    }

    /// Installs the binary, the trusted key and the recover unit.
    fn install(&self) {
        self.ok(&format!(
            "cp {INSIDE_BIN}/dickbox-deploy /usr/bin/dickbox-deploy && \
             mkdir -p /etc/dickbox/trust/minisign && cp /results/ci.pub /etc/dickbox/trust/minisign/ci.pub && \
             printf 'deploy:\\n  drain: 1s\\n' > /etc/dickbox/dickbox.yml"
        ));
        let unit = fs::read_to_string(RECOVER_UNIT).unwrap();
        self.ok(&format!(
            "cat > /etc/systemd/system/dickbox-recover.service <<'UNIT'\n{unit}UNIT\nsystemctl daemon-reload && systemctl enable --quiet dickbox-recover.service"
        ));
    }
}

fn cap(v: &str) -> String {
    format!("/results/hello-api-{v}.capsule.tar.zst")
}

#[test]
fn blue_green_lifecycle_in_real_systemd() {
    let fx = Fixture::new();
    let Some(sb) = Sandbox::up_with("deploy-life", &bin_dir(), &[fx.bind()]) else {
        return;
    };
    let h = Host { sb: &sb };
    h.install();

    // v1: first deploy, reachable through current.sock.
    let o = h.deploy(&format!("deploy {}", cap("1.0.0")));
    assert!(o.status.success(), "deploy v1: {}", text(&o));
    assert!(h.get().starts_with("hello from 1.0.0"), "{}", h.get());
    let env = h.ok(
        "u=$(systemctl list-units --plain --no-legend 'dickbox-hello-api@*' | awk '{print $1}'); \
         tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value $u)/environ | grep '^ODD='",
    );
    assert_eq!(
        env.trim(),
        r#"ODD=a$b ${HOME} $$c 100% "q" \x"#,
        "environment reached the service changed"
    );
    let unit = h.ok("cat /etc/systemd/system/dickbox-hello-api@.service");
    assert!(
        unit.contains("User=dickbox-svc") && unit.contains("ProtectSystem=strict"),
        "{unit}"
    );
    let limits = h.ok("systemctl show -p MemoryMax,TasksMax,Slice,CPUQuotaPerSecUSec $(systemctl list-units --plain --no-legend 'dickbox-hello-api@*' | awk '{print $1}')");
    assert!(
        limits.contains("MemoryMax=268435456") && limits.contains("TasksMax=64"),
        "{limits}"
    );
    assert!(
        limits.contains("Slice=dickbox-demo.slice") && limits.contains("CPUQuotaPerSecUSec=1s"),
        "{limits}"
    );

    // v2 under a bounded load through the front: zero failed requests.
    h.ok("rm -f /results/stop /results/load.json && systemd-run --quiet --unit=loadgen python3 /results/load.py");
    std::thread::sleep(std::time::Duration::from_millis(700));
    let o = h.deploy(&format!("deploy {}", cap("2.0.0")));
    assert!(o.status.success(), "deploy v2: {}", text(&o));
    std::thread::sleep(std::time::Duration::from_millis(700));
    h.ok("touch /results/stop; for i in $(seq 100); do [ -e /results/load.json ] && exit 0; sleep 0.1; done; exit 1");
    let load: serde_json::Value =
        serde_json::from_slice(&fs::read(fx.dir.path().join("load.json")).unwrap()).unwrap();
    assert_eq!(load["fail"], 0, "failed requests during the switch: {load}");
    assert!(
        load["ok"].as_u64().unwrap() > 20,
        "too little load to mean anything: {load}"
    );
    eprintln!("load during the v1 -> v2 switch: {load}");
    assert!(h.get().starts_with("hello from 2.0.0"));
    assert_eq!(h.active_instances().len(), 1, "{:?}", h.active_instances());

    // v3 fails its health check: exit 4, v2 keeps serving, v3 is stopped.
    let o = h.deploy(&format!("deploy {}", cap("3.0.0")));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains("health check failed") && text(&o).contains("503"),
        "{}",
        text(&o)
    );
    assert!(h.get().starts_with("hello from 2.0.0"));
    assert_eq!(h.active_instances().len(), 1, "{:?}", h.active_instances());
    let prom = h.ok("cat /var/lib/prometheus/node-exporter/dickbox-deploy.prom");
    assert!(
        prom.contains("dickbox_deployments_total{service=\"hello-api\",result=\"failed\"} 1"),
        "{prom}"
    );

    // A downgrade is refused; rollback to the kept v1 is the way down.
    let o = h.deploy(&format!("deploy {}", cap("1.0.0")));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("refusing a downgrade"), "{}", text(&o));
    let o = h.deploy("rollback hello-api");
    assert!(o.status.success(), "rollback: {}", text(&o));
    assert!(h.get().starts_with("hello from 1.0.0"));
    let st = h.ok("dickbox-deploy status --json");
    let st: serde_json::Value = serde_json::from_str(
        st.lines()
            .filter(|l| !l.contains(" INFO "))
            .collect::<Vec<_>>()
            .join("\n")
            .as_str(),
    )
    .unwrap_or_default();
    if let Some(s) = st["services"].get(0) {
        assert_eq!(s["version"], "1.0.0", "{st}");
        assert_eq!(s["active_state"], "active", "{st}");
    }

    // gc keeps current and previous, removes the failed v3.
    let o = h.deploy("gc --keep 0");
    assert!(o.status.success(), "{}", text(&o));
    let list = h.ok("dickbox-deploy list");
    assert!(
        list.contains("1.0.0") && list.contains("2.0.0") && !list.contains("3.0.0"),
        "{list}"
    );

    // Reboot: /run is empty, the current instance and its front come back.
    sb.reboot();
    h.ok("systemctl is-system-running --wait >/dev/null || true");
    // The boot queues the current instance's start; give it a few seconds.
    h.ok("for i in $(seq 100); do curl -s --unix-socket /run/dickbox/hello-api/current.sock http://x/ && exit 0; sleep 0.1; done; exit 1");
    assert!(
        h.get().starts_with("hello from 1.0.0"),
        "after reboot: {}",
        h.get()
    );
    assert_eq!(h.active_instances().len(), 1);

    // remove: units and links go, releases stay until gc.
    let o = h.deploy("remove hello-api");
    assert!(o.status.success(), "{}", text(&o));
    assert!(h.active_instances().is_empty());
    h.ok("test ! -e /etc/systemd/system/dickbox-hello-api@.service && test ! -e /run/dickbox/hello-api/current.sock && test ! -e /var/lib/dickbox/services/hello-api");
    assert!(h.ok("ls /var/lib/dickbox/releases").lines().count() >= 2);
}

/// Kills the deploy of v2 at every step in turn, runs recover, and checks that
/// exactly one healthy version serves and the links agree with it.
#[test]
fn crash_at_every_step_then_recover_leaves_one_healthy_version() {
    let fx = Fixture::new();
    let Some(sb) = Sandbox::up_with("deploy-crash", &bin_dir(), &[fx.bind()]) else {
        return;
    };
    let h = Host { sb: &sb };
    h.install();
    let o = h.deploy(&format!("deploy {}", cap("1.0.0")));
    assert!(o.status.success(), "{}", text(&o));
    let points = [
        "stage-extract",
        "stage-rename",
        "deploy-begin",
        "deploy-units-written",
        "deploy-starting",
        "deploy-healthy",
        "deploy-switching",
        "switch-between-links",
        "deploy-switched",
        "deploy-old-stopped",
    ];
    for point in points {
        let o = h.sh(&format!(
            "DICKBOX_DEPLOY_TEST_CRASH_AT={point} dickbox-deploy deploy {}",
            cap("2.0.0")
        ));
        assert_eq!(
            o.status.code(),
            Some(137),
            "{point}: the deploy did not crash: {}",
            text(&o)
        );
        let o = h.deploy("recover");
        assert!(o.status.success(), "{point}: recover: {}", text(&o));
        let active = h.active_instances();
        assert_eq!(active.len(), 1, "{point}: active instances {active:?}");
        let answer = h.get();
        let cur = h.ok("readlink /var/lib/dickbox/services/hello-api/current");
        let id = cur.trim().rsplit('/').next().unwrap().to_owned();
        assert!(
            active[0].contains(&id),
            "{point}: current link {id} but active {active:?}"
        );
        assert!(
            answer.contains(&id),
            "{point}: front answers {answer} but current is {id}"
        );
        h.ok("test -z \"$(ls /var/lib/dickbox/journal)\"");
        h.ok("test -z \"$(ls -a /var/lib/dickbox/releases | grep staging)\"");
        // Back to v1 for the next round.
        if answer.starts_with("hello from 2.0.0") {
            let o = h.deploy("rollback hello-api");
            assert!(o.status.success(), "{point}: rollback: {}", text(&o));
        }
        assert!(h.get().starts_with("hello from 1.0.0"), "{point}");
        eprintln!("crash at {point}: recovered to {id}");
    }
}

#[test]
fn two_deploys_at_once_and_an_untrusted_key_in_the_manifest() {
    let fx = Fixture::new();
    // A capsule signed by a key the host does not trust, which carries that
    // key in its public_key field: still refused.
    let (pk, sk, _) = generate_keypair(None).unwrap();
    let kd = tempfile::tempdir().unwrap();
    fs::write(kd.path().join("k"), sk).unwrap();
    let rogue = SigningKey::load(&kd.path().join("k"), None).unwrap();
    let rogue_dir = fx.dir.path().join("rogue");
    fs::create_dir(&rogue_dir).unwrap();
    let pk_b64 = pk.lines().nth(1).unwrap().to_owned();
    build_capsule(&rogue_dir, &rogue, "9.0.0", "9.0.0", Some(&pk_b64));

    let Some(sb) = Sandbox::up_with("deploy-race", &bin_dir(), &[fx.bind()]) else {
        return;
    };
    let h = Host { sb: &sb };
    h.install();
    let o = h.deploy("deploy /results/rogue/hello-api-9.0.0.capsule.tar.zst");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("does not trust"), "{}", text(&o));

    // Two deploys at once: one waits for the lock, both finish, the last wins.
    let o = h.sh(&format!(
        "dickbox-deploy deploy {} > /tmp/a.log 2>&1 & a=$!; sleep 0.05; \
         dickbox-deploy deploy {} > /tmp/b.log 2>&1; rb=$?; wait $a; ra=$?; \
         cat /tmp/a.log /tmp/b.log; echo \"ra=$ra rb=$rb\"",
        cap("1.0.0"),
        cap("2.0.0")
    ));
    let out = text(&o);
    assert!(out.contains("ra=0 rb=0"), "{out}");
    assert!(out.contains("waiting for another dickbox-deploy"), "{out}");
    assert!(h.get().starts_with("hello from 2.0.0"), "{}", h.get());
    assert_eq!(h.active_instances().len(), 1);
}

/// Under `deploy.require: both`, a capsule signed with minisign and a cosign
/// key deploys into real systemd; with either signature removed it is refused
/// and nothing changes.
#[test]
fn both_signatures_required_in_real_systemd() {
    use capsule::sigstore::{generate_cosign_keypair, sign_cosign};
    let fx = Fixture::new();
    let (public_pem, private_pem) = generate_cosign_keypair().unwrap();
    fs::write(fx.dir.path().join("cosign.pub.pem"), &public_pem).unwrap();
    for v in ["1.0.0", "2.0.0"] {
        let a = fx.dir.path().join(format!("hello-api-{v}.capsule.tar.zst"));
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(fs::read(&a).unwrap()).into();
        let (sig, _) = sign_cosign(&digest, &private_pem, "test key").unwrap();
        fs::write(format!("{}.cosign.sig", a.display()), sig).unwrap();
    }
    let Some(sb) = Sandbox::up_with("deploy-both", &bin_dir(), &[fx.bind()]) else {
        return;
    };
    let h = Host { sb: &sb };
    h.install();
    h.ok("mkdir -p /etc/dickbox/trust/sigstore/keys && cp /results/cosign.pub.pem /etc/dickbox/trust/sigstore/keys/ci.pem && \
          printf 'deploy:\\n  drain: 1s\\n  require: both\\n' > /etc/dickbox/dickbox.yml");
    let o = h.deploy(&format!("deploy {}", cap("1.0.0")));
    assert!(o.status.success(), "both signatures: {}", text(&o));
    assert!(h.get().starts_with("hello from 1.0.0"));
    for (suffix, want) in [
        (".minisig", "unsigned"),
        (".cosign.sig", "minisign alone is not enough"),
    ] {
        h.ok(&format!("mkdir -p /tmp/only && cp /results/hello-api-2.0.0.capsule.tar.zst* /tmp/only/ && rm /tmp/only/hello-api-2.0.0.capsule.tar.zst{suffix}"));
        let o = h.deploy("deploy /tmp/only/hello-api-2.0.0.capsule.tar.zst");
        assert_eq!(o.status.code(), Some(3), "without {suffix}: {}", text(&o));
        assert!(
            text(&o).contains(want),
            "without {suffix}: want {want:?} in {}",
            text(&o)
        );
        assert!(h.get().starts_with("hello from 1.0.0"));
        h.ok("rm -rf /tmp/only");
    }
    assert_eq!(h.ok("ls /var/lib/dickbox/releases").lines().count(), 1);
}
