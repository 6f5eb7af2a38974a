//! `dickbox-deploy verify URL` against real servers on 127.0.0.1 that these
//! tests start themselves: a small HTTP server thread (token checks, streams
//! past the size cap, stalls, redirects) and, for HTTPS, Python's
//! `http.server` wrapped in TLS with a CA made by `openssl` here. The
//! capsules are real, packed and signed with a real key. Nothing here touches
//! systemd, and no traffic leaves loopback.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capsule::minisig::{SigningKey, generate_keypair};
use capsule::pack::{self, PackOptions};
use capsule::trusted::TrustedComment;

const BIN: &str = env!("CARGO_BIN_EXE_dickbox-deploy");
const TOKEN: &str = "test-only-token-3f9c0d1e";
const CAPSULE: &str = "demo-1.0.0.capsule.tar.zst";

/// A host root with one trusted key and a signed capsule in `served/`.
struct Host {
    root: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let (pk, sk, _) = generate_keypair(None).unwrap();
        fs::create_dir_all(r.join("trust/minisign")).unwrap();
        fs::write(r.join("trust/minisign/ci.pub"), pk).unwrap();
        fs::write(r.join("sk"), sk).unwrap();
        let key = SigningKey::load(&r.join("sk"), None).unwrap();

        let tree = r.join("tree");
        fs::create_dir_all(tree.join("bin")).unwrap();
        fs::write(tree.join("bin/start.sh"), "#!/bin/sh\nexec sleep 100\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(tree.join("bin/start.sh"), fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        let text = "name: demo\nversion: 1.0.0\nentrypoint: bin/start.sh\n";
        let m = capsule::manifest::Manifest::parse(text, "capsule.yml").unwrap();
        let text = capsule::manifest::with_format_line(text, &m);
        let entries = pack::scan_tree(&tree).unwrap();
        fs::create_dir_all(r.join("served")).unwrap();
        let archive = r.join("served").join(CAPSULE);
        let f = fs::File::create(&archive).unwrap();
        pack::pack(f, &text, &entries, PackOptions { mtime: 0 }, &mut |_| {}).unwrap();
        let bytes = fs::read(&archive).unwrap();
        let tc = TrustedComment {
            name: m.name.clone(),
            version: m.version.clone(),
            sha256: capsule::digest::sha256_hex(&bytes),
            signed: 1_780_000_000,
        };
        fs::write(
            format!("{}.minisig", archive.display()),
            key.sign(&bytes[..], &tc.to_string()).unwrap(),
        )
        .unwrap();
        Host { root }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.path().join(p)
    }

    fn served(&self) -> BTreeMap<String, Vec<u8>> {
        let mut m = BTreeMap::new();
        for e in fs::read_dir(self.path("served")).unwrap().flatten() {
            m.insert(
                format!("/{}", e.file_name().to_string_lossy()),
                fs::read(e.path()).unwrap(),
            );
        }
        m
    }

    fn run(&self, args: &[&str], env: &[(&str, String)]) -> Output {
        let r = self.root.path();
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("DICKBOX_CONFIG", "/dev/null")
            .env("DICKBOX_DEPLOY_STATE_DIR", r.join("state"))
            .env("DICKBOX_DEPLOY_TRUST_DIR", r.join("trust"))
            .env("DICKBOX_DEPLOY_UNIT_DIR", r.join("units"))
            .env("DICKBOX_DEPLOY_RUNTIME_DIR", r.join("run"))
            .env("DICKBOX_DEPLOY_LOCK_PATH", r.join("lock"))
            .env("DICKBOX_DEPLOY_METRICS_DIR", r.join("metrics"))
            .env("DICKBOX_DEPLOY_SYSTEMCTL", "/bin/false");
        // Loopback only: no proxy from the caller's environment.
        for v in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "all_proxy",
        ] {
            cmd.env_remove(v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn count(&self, dir: &str) -> usize {
        fs::read_dir(self.path(dir))
            .map(|rd| rd.count())
            .unwrap_or(0)
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Serve the files; 404 for others.
    Files,
    /// Answer every request with an endless body (no Content-Length).
    Endless,
    /// Send headers and a little body, then stall.
    Stall,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
}

/// A tiny HTTP/1.1 server on 127.0.0.1 in a thread of this test; stops by
/// itself after 60 s and on drop.
struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(
        files: BTreeMap<String, Vec<u8>>,
        mode: Mode,
        token: Option<&str>,
        redirects: BTreeMap<String, String>,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let token = token.map(str::to_owned);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !stop2.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (files, token, redirects, seen, stop) = (
                            files.clone(),
                            token.clone(),
                            redirects.clone(),
                            seen2.clone(),
                            stop2.clone(),
                        );
                        std::thread::spawn(move || {
                            serve(s, &files, mode, token.as_deref(), &redirects, &seen, &stop)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Server { port, seen, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    s: TcpStream,
    files: &BTreeMap<String, Vec<u8>>,
    mode: Mode,
    token: Option<&str>,
    redirects: &BTreeMap<String, String>,
    seen: &Mutex<Vec<Seen>>,
    stop: &AtomicBool,
) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    // Keep-alive: several requests per connection, each fully answered.
    for _ in 0..20 {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut authorization = None;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("authorization")
            {
                authorization = Some(v.trim().to_owned());
            }
        }
        seen.lock().unwrap().push(Seen {
            path: path.clone(),
            authorization: authorization.clone(),
        });
        if let Some(to) = redirects.get(&path) {
            let _ = write!(
                w,
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n"
            );
            continue;
        }
        if let Some(t) = token
            && authorization.as_deref() != Some(&format!("Bearer {t}"))
        {
            let _ = w.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
            continue;
        }
        match mode {
            Mode::Files => match files.get(&path) {
                Some(body) => {
                    let _ = write!(
                        w,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = w.write_all(body);
                }
                None => {
                    let _ = w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                }
            },
            Mode::Endless => {
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                let chunk = vec![0x5au8; 64 * 1024];
                // At most 256 MiB, or until the client hangs up.
                for _ in 0..4096 {
                    if stop.load(Ordering::Relaxed) || w.write_all(&chunk).is_err() {
                        break;
                    }
                }
                return;
            }
            Mode::Stall => {
                let _ = w.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nsome bytes, then nothing",
                );
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(30) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
        }
    }
}

#[test]
fn verify_by_url_downloads_checks_and_removes_the_download() {
    let h = Host::new();
    let srv = Server::start(h.served(), Mode::Files, None, BTreeMap::new());
    let url = srv.url(&format!("/{CAPSULE}"));
    let o = h.run(&["verify", &url], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("verified and staged demo 1.0.0"),
        "{}",
        text(&o)
    );
    assert_eq!(h.count("state/releases"), 1, "{}", text(&o));
    assert_eq!(h.count("state/downloads"), 0, "the download folder stayed");
    let paths: Vec<String> = srv.seen().into_iter().map(|s| s.path).collect();
    for suffix in ["", ".minisig", ".cosign.sig", ".sigstore.json"] {
        assert!(
            paths.contains(&format!("/{CAPSULE}{suffix}")),
            "{suffix} not asked for: {paths:?}"
        );
    }
}

#[test]
fn a_url_without_minisig_is_refused_as_unsigned() {
    let h = Host::new();
    let mut files = h.served();
    files.retain(|k, _| !k.ends_with(".minisig"));
    let srv = Server::start(files, Mode::Files, None, BTreeMap::new());
    let url = srv.url(&format!("/{CAPSULE}"));
    let o = h.run(&["verify", &url], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("unsigned") && text(&o).contains(&url),
        "{}",
        text(&o)
    );
    assert_eq!(h.count("state/releases"), 0);
    assert_eq!(h.count("state/downloads"), 0);
}

#[test]
fn missing_archive_and_server_errors_name_the_url_and_status() {
    let h = Host::new();
    let srv = Server::start(h.served(), Mode::Files, None, BTreeMap::new());
    let url = srv.url("/nothing-here.capsule.tar.zst");
    let o = h.run(&["verify", &url], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("fetch {url}: the server answered HTTP 404")),
        "{}",
        text(&o)
    );
    assert_eq!(h.count("state/downloads"), 0);
}

#[test]
fn a_download_past_the_size_cap_is_stopped_and_nothing_is_left() {
    let h = Host::new();
    let srv = Server::start(BTreeMap::new(), Mode::Endless, None, BTreeMap::new());
    let url = srv.url(&format!("/{CAPSULE}"));
    let started = Instant::now();
    let o = h.run(
        &["verify", &url],
        &[("DICKBOX_DEPLOY_FETCH_MAX_SIZE", "1M".into())],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("larger than deploy.fetch_max_size") && text(&o).contains(&url),
        "{}",
        text(&o)
    );
    assert_eq!(h.count("state/downloads"), 0, "a partial download stayed");
    assert_eq!(h.count("state/releases"), 0);
    eprintln!("size cap hit after {:?}", started.elapsed());
}

#[test]
fn a_stalled_server_ends_in_a_timeout_error() {
    let h = Host::new();
    let srv = Server::start(BTreeMap::new(), Mode::Stall, None, BTreeMap::new());
    let url = srv.url(&format!("/{CAPSULE}"));
    let started = Instant::now();
    let o = h.run(
        &["verify", &url],
        &[("DICKBOX_DEPLOY_FETCH_TIMEOUT", "2s".into())],
    );
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("not finished within deploy.fetch_timeout") && text(&o).contains(&url),
        "{}",
        text(&o)
    );
    // Generous: the point is that it ends, not how fast.
    assert!(took < Duration::from_secs(25), "took {took:?}");
    assert_eq!(h.count("state/downloads"), 0);
    eprintln!("stalled download ended after {took:?} (deadline 2s)");
}

#[test]
fn the_token_is_sent_to_its_origin_and_not_across_a_redirect() {
    let h = Host::new();
    // The second origin holds the files and wants no token; the first
    // requires the token and redirects the archive to the second.
    let other = Server::start(h.served(), Mode::Files, None, BTreeMap::new());
    let mut redirects = BTreeMap::new();
    redirects.insert(
        "/moved.capsule.tar.zst".to_owned(),
        other.url(&format!("/{CAPSULE}")),
    );
    let srv = Server::start(h.served(), Mode::Files, Some(TOKEN), redirects);
    fs::write(h.path("token"), format!("{TOKEN}\n")).unwrap();
    let token_env = [(
        "DICKBOX_DEPLOY_TOKEN_FILE",
        h.path("token").display().to_string(),
    )];

    // Without the token: 401, named.
    let url = srv.url(&format!("/{CAPSULE}"));
    let o = h.run(&["verify", &url], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("HTTP 401"), "{}", text(&o));

    // With it: accepted, and never printed.
    let o = h.run(&["-v", "verify", &url], &token_env);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !text(&o).contains(TOKEN),
        "the token was printed: {}",
        text(&o)
    );
    let sent: Vec<Seen> = srv.seen();
    assert!(
        sent.iter()
            .filter(|s| s.path.starts_with(&format!("/{CAPSULE}")))
            .any(|s| s.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"))),
        "{sent:?}"
    );

    // A redirect to another origin (another port) does not carry it.
    let o = h.run(&["verify", &srv.url("/moved.capsule.tar.zst")], &token_env);
    let at_other = other.seen();
    assert!(
        at_other.iter().any(|s| s.path == format!("/{CAPSULE}")),
        "{}: {at_other:?}",
        text(&o)
    );
    assert!(
        at_other.iter().all(|s| s.authorization.is_none()),
        "the token crossed to another origin: {at_other:?}"
    );
}

/// A CA and a server certificate for 127.0.0.1, made by `openssl` here.
fn make_ca(dir: &Path) {
    let sh = format!(
        "set -e; cd {d}; \
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
           -keyout ca.key -out ca.pem -days 2 -subj /CN=test-only-dickbox-ca; \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
           -keyout srv.key -out srv.csr -subj /CN=127.0.0.1; \
         printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext; \
         openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
           -out srv.pem -days 2 -extfile ext",
        d = dir.display()
    );
    let o = Command::new("sh").args(["-c", &sh]).output().unwrap();
    assert!(o.status.success(), "openssl: {}", text(&o));
}

const HTTPS_PY: &str = r#"
import functools, http.server, ssl, sys, threading
folder, cert, key = sys.argv[1:4]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=folder)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
threading.Timer(60, srv.shutdown).start()
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// Python's https server; killed by its own PID on drop.
struct HttpsServer {
    child: Child,
    port: u16,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_with_the_ca_bundle_works_and_without_it_is_a_tls_error() {
    let h = Host::new();
    make_ca(&h.path(""));
    let mut child = Command::new("python3")
        .args(["-c", HTTPS_PY])
        .arg(h.path("served"))
        .arg(h.path("srv.pem"))
        .arg(h.path("srv.key"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let srv = HttpsServer {
        port: line.trim().parse().expect("python printed its port"),
        child,
    };
    let url = format!("https://127.0.0.1:{}/{CAPSULE}", srv.port);

    let o = h.run(&["verify", &url], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("fetch {url}: TLS")) && text(&o).contains("deploy.ca_bundle"),
        "{}",
        text(&o)
    );
    assert_eq!(h.count("state/downloads"), 0);

    let ca = [(
        "DICKBOX_DEPLOY_CA_BUNDLE",
        h.path("ca.pem").display().to_string(),
    )];
    let o = h.run(&["verify", &url], &ca);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(h.count("state/releases"), 1);
    assert_eq!(h.count("state/downloads"), 0);
}

#[test]
fn a_bad_ca_bundle_or_token_file_is_named() {
    let h = Host::new();
    fs::write(h.path("empty.pem"), "not a certificate\n").unwrap();
    let url = "https://127.0.0.1:9/x.capsule.tar.zst";
    let cases = [
        (
            "DICKBOX_DEPLOY_CA_BUNDLE",
            "empty.pem",
            "no PEM certificate",
        ),
        (
            "DICKBOX_DEPLOY_CA_BUNDLE",
            "missing.pem",
            "read deploy.ca_bundle",
        ),
        (
            "DICKBOX_DEPLOY_TOKEN_FILE",
            "missing-token",
            "read deploy.token_file",
        ),
    ];
    for (var, file, want) in cases {
        let o = h.run(
            &["verify", url],
            &[(var, h.path(file).display().to_string())],
        );
        assert_eq!(o.status.code(), Some(1), "{var}={file}: {}", text(&o));
        assert!(text(&o).contains(want), "{var}={file}: {}", text(&o));
    }
}
