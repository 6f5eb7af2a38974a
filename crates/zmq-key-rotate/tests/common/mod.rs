//! Shared helpers for the integration tests: a temporary host root, the real
//! binary with every root path pointed into it, the bus as a child process,
//! and the pyzmq peer in `tests/zmq/peer.py`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_zmq-key-rotate");

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv Python with pyzmq (made by `scripts/setup`).
pub fn python() -> PathBuf {
    let p = workspace().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} missing: run scripts/setup to create the venv with pyzmq",
        p.display()
    );
    p
}

pub fn peer_script() -> PathBuf {
    workspace().join("tests/zmq/peer.py")
}

/// A temporary host: keys, runtime and metrics folders and an empty config.
pub struct Host {
    pub dir: tempfile::TempDir,
    pub grace: String,
    pub retention: String,
}

impl Host {
    pub fn new() -> Self {
        // Short paths: ipc socket paths are limited to about 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("zkr")
            .tempdir_in("/tmp")
            .unwrap();
        for d in ["keys", "run", "metrics", "peers"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("dickbox.yml"), "").unwrap();
        Self {
            dir,
            grace: "1h".into(),
            retention: "30d".into(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn keys(&self) -> PathBuf {
        self.path("keys")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.path("run")
    }

    pub fn events_socket(&self) -> PathBuf {
        self.path("run/zmq-events.sock")
    }

    /// The binary with a clean `DICKBOX_*` environment and our roots.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("DICKBOX_") || k == "JOURNAL_STREAM" || k == "NOTIFY_SOCKET" {
                c.env_remove(k);
            }
        }
        c.env("DICKBOX_CONFIG", self.path("dickbox.yml"))
            .env("DICKBOX_ZMQ_KEY_GROUP", "")
            .env("DICKBOX_ZMQ_WATCH_INTERVAL", "50ms")
            .env("RUST_LOG", "info")
            .args(["--keys-dir", self.keys().to_str().unwrap()])
            .args(["--runtime-dir", self.run_dir().to_str().unwrap()])
            .args(["--metrics-dir", self.path("metrics").to_str().unwrap()])
            .args(args);
        // An empty value leaves the setting to the config file.
        if !self.grace.is_empty() {
            c.args(["--grace", &self.grace]);
        }
        if !self.retention.is_empty() {
            c.args(["--retention", &self.retention]);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "zmq-key-rotate {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `rotate --json`, returning the events.
    pub fn rotate(&self) -> serde_json::Value {
        let out = self.ok(&["rotate", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["event"].clone()
    }

    /// Makes a client certificate with pyzmq and allows it on the bus.
    pub fn allowed_client(&self, name: &str) -> PathBuf {
        let peers = self.path("peers");
        self.peer(&["gencert", peers.to_str().unwrap(), name]);
        let clients = self.keys().join("bus/clients");
        std::fs::copy(
            peers.join(format!("{name}.key")),
            clients.join(format!("{name}.key")),
        )
        .unwrap();
        peers.join(format!("{name}.key_secret"))
    }

    /// Makes a client certificate that the bus does not know.
    pub fn unknown_client(&self, name: &str) -> PathBuf {
        let peers = self.path("peers");
        self.peer(&["gencert", peers.to_str().unwrap(), name]);
        peers.join(format!("{name}.key_secret"))
    }

    pub fn peer(&self, args: &[&str]) -> String {
        let out = Command::new(python())
            .arg(peer_script())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "peer {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Starts a pyzmq subscriber or publisher in the background.
    pub fn spawn_peer(&self, kind: &str, cert: &Path, follow: bool, extra: &[&str]) -> Child {
        let mut c = Command::new(python());
        c.arg(peer_script())
            .arg(kind)
            .args(["--keys", self.keys().to_str().unwrap()])
            .args(["--runtime", self.run_dir().to_str().unwrap()])
            .args(["--events-socket", self.events_socket().to_str().unwrap()])
            .args([
                "--events-pub",
                self.keys().join("events.pub").to_str().unwrap(),
            ])
            .args(["--cert", cert.to_str().unwrap()])
            .args(extra)
            .stdin(Stdio::null());
        if follow {
            c.arg("--follow");
        }
        c.spawn().unwrap()
    }

    /// Starts the bus and waits until its current endpoints exist.
    pub fn start_bus(&self) -> Bus {
        let log = std::fs::File::create(self.path("bus.log")).unwrap();
        let child = self.cmd(&["bus"]).stderr(log).spawn().unwrap();
        let bus = Bus { child };
        let link = self.run_dir().join("bus/current");
        wait_for(Duration::from_secs(10), || {
            link.join("sub.sock").exists() && self.events_socket().exists()
        });
        bus
    }

    pub fn bus_log(&self) -> String {
        std::fs::read_to_string(self.path("bus.log")).unwrap_or_default()
    }
}

/// The bus child; killed (by its own pid) when dropped.
pub struct Bus {
    pub child: Child,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a peer process to end by itself (bounded), then reads its JSON.
pub fn finish(mut child: Child, out: &Path, limit: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "peer exited with {status}");
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("peer did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

/// Unix seconds of an RFC 3339 time.
pub fn unix(rfc3339: &str) -> f64 {
    humantime::parse_rfc3339(rfc3339)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
