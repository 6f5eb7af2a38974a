//! capsule-build end to end: the real binary, real files, and the stock
//! `minisign`, `tar` and `zstd` tools on the other side.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_capsule-build");

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "{name} is not installed: run scripts/setup");
    Command::new(name)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

fn cb(args: &[&str]) -> Output {
    run(Command::new(BIN)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("DICKBOX_CONFIG", "/dev/null")
        .env_remove("CI"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small service tree; `order` decides the creation order of its files.
fn make_tree(root: &Path, reverse: bool) {
    let mut files: Vec<(&str, &[u8], u32)> = vec![
        ("bin/start.sh", b"#!/bin/sh\nexec sleep 1000\n", 0o775),
        ("lib/data.bin", &[7u8; 5000], 0o600),
        (
            "lib/deep/nested/name-with-a-very-long-path-component-that-is-over-one-hundred-bytes-long-to-force-gnu-longname.txt",
            b"long",
            0o644,
        ),
        ("README", b"hello\n", 0o664),
    ];
    if reverse {
        files.reverse();
    }
    for (p, data, mode) in files {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }
    std::os::unix::fs::symlink("../lib/data.bin", root.join("bin/data")).unwrap();
    fs::write(
        root.join("capsule.yml"),
        "name: demo\nversion: 1.2.3\nentrypoint: bin/start.sh\nservices:\n  - name: demo\n",
    )
    .unwrap();
}

struct Keys {
    _dir: tempfile::TempDir,
    key: PathBuf,
    public: PathBuf,
}

fn keygen() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let o = cb(&["keygen", "--out", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    Keys {
        key: dir.path().join("minisign.key"),
        public: dir.path().join("minisign.pub"),
        _dir: dir,
    }
}

fn build(src: &Path, out: &Path, keys: &Keys, extra: &[&str]) -> Output {
    let mut args = vec![
        "build",
        src.to_str().unwrap(),
        "--key",
        keys.key.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cb(&args)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn same_tree_built_twice_gives_identical_bytes_and_gnu_tar_reads_it() {
    let keys = keygen();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    make_tree(a.path(), false);
    // Second tree: other creation order, other mtimes, other umask-like modes.
    make_tree(b.path(), true);
    let old = filetime_set(b.path());
    assert!(old);
    let out_a = tempfile::tempdir().unwrap();
    let out_b = tempfile::tempdir().unwrap();
    let o = build(a.path(), out_a.path(), &keys, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 077 && exec {BIN} build {} --key {} --out {}",
            b.path().display(),
            keys.key.display(),
            out_b.path().display()
        ))
        .env("DICKBOX_CONFIG", "/dev/null"));
    assert!(o.status.success(), "{}", stderr(&o));
    let name = "demo-1.2.3.capsule.tar.zst";
    let bytes_a = fs::read(out_a.path().join(name)).unwrap();
    let bytes_b = fs::read(out_b.path().join(name)).unwrap();
    assert!(bytes_a == bytes_b, "archives differ");

    // GNU tar + zstd list and extract it, with owner 0:0 and normalised modes.
    let o = run(tool("tar")
        .args(["--zstd", "-tvf"])
        .arg(out_a.path().join(name)));
    assert!(o.status.success(), "{}", stderr(&o));
    let list = String::from_utf8_lossy(&o.stdout).into_owned();
    let first = list.lines().next().unwrap();
    assert!(first.ends_with(" capsule.yml"), "first member: {first}");
    assert!(list.lines().all(|l| l.contains(" 0/0 ")), "{list}");
    assert!(
        list.contains("-rwxr-xr-x 0/0") && list.contains("-rw-r--r-- 0/0"),
        "{list}"
    );
    assert!(!list.contains("-rw-------"), "{list}");
    let x = tempfile::tempdir().unwrap();
    let o = run(tool("sh").arg("-c").arg(format!(
        "zstd -dc {} | tar -x -C {}",
        out_a.path().join(name).display(),
        x.path().display()
    )));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read(x.path().join("lib/data.bin")).unwrap(),
        vec![7u8; 5000]
    );
    assert_eq!(
        fs::read_link(x.path().join("bin/data")).unwrap(),
        PathBuf::from("../lib/data.bin")
    );
    let manifest = fs::read_to_string(x.path().join("capsule.yml")).unwrap();
    assert!(manifest.starts_with("format: 1\n"), "{manifest}");
}

/// Gives every file in the tree an odd mtime; returns true when done.
fn filetime_set(root: &Path) -> bool {
    let o = Command::new("find")
        .arg(root)
        .args([
            "-exec",
            "touch",
            "-h",
            "-d",
            "2001-02-03 04:05:06",
            "{}",
            "+",
        ])
        .status()
        .unwrap();
    o.success()
}

#[test]
fn stock_minisign_verifies_our_signature_and_records_are_written() {
    let keys = keygen();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false);
    let out = tempfile::tempdir().unwrap();
    let o = build(src.path(), out.path(), &keys, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let archive = out.path().join("demo-1.2.3.capsule.tar.zst");
    let o = run(tool("minisign")
        .args(["-V", "-H", "-p"])
        .arg(&keys.public)
        .arg("-m")
        .arg(&archive));
    assert!(
        o.status.success(),
        "minisign -V: {}{}",
        stderr(&o),
        String::from_utf8_lossy(&o.stdout)
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let sha = capsule::digest::sha256_hex(&fs::read(&archive).unwrap());
    assert!(
        stdout.contains(&format!(
            "dickbox-capsule:1 name=demo version=1.2.3 sha256={sha} signed="
        )),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(out.path().join("demo-1.2.3.build.json")).unwrap())
            .unwrap();
    assert_eq!(json["schema"], "dickbox-capsule-build/1");
    assert_eq!(json["capsule"]["sha256"], sha.as_str());
    assert_eq!(json["signatures"][0]["algorithm"], "ED");
    assert_eq!(json["unsigned"], false);
    let results = fs::read_to_string(out.path().join("demo-1.2.3.results.txt")).unwrap();
    assert!(
        results.contains(&sha) && results.contains("bin/start.sh"),
        "{results}"
    );

    // A second capsule into the same folder does not overwrite the first.
    let src2 = tempfile::tempdir().unwrap();
    make_tree(src2.path(), false);
    fs::write(
        src2.path().join("capsule.yml"),
        "name: other\nversion: 0.1.0\nentrypoint: bin/start.sh\n",
    )
    .unwrap();
    let o = build(src2.path(), out.path(), &keys, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let names = listing(out.path());
    assert_eq!(names.len(), 8, "{names:?}");
}

/// `DIR/NAME.pub` and `DIR/NAME.key` made by the stock minisign CLI with -W.
fn stock_keypair_without_password(dir: &Path, name: &str) {
    let o = run(tool("minisign")
        .args(["-G", "-W", "-p"])
        .arg(dir.join(format!("{name}.pub")))
        .arg("-s")
        .arg(dir.join(format!("{name}.key"))));
    assert!(o.status.success(), "minisign -G -W: {}", stderr(&o));
}

#[test]
fn keys_made_by_the_stock_minisign_cli_sign_with_capsule_build() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Without a password (-W): the CLI writes a zero checksum.
    stock_keypair_without_password(d, "w");
    // With a password, given on stdin.
    let mut child = tool("minisign")
        .args(["-G", "-p"])
        .arg(d.join("p.pub"))
        .arg("-s")
        .arg(d.join("p.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"test-only-pw\ntest-only-pw\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    fs::write(d.join("pw"), "test-only-pw\n").unwrap();

    let pw_path = d.join("pw").to_str().unwrap().to_owned();
    for (key, public, extra) in [
        ("w.key", "w.pub", vec![]),
        (
            "p.key",
            "p.pub",
            vec!["--password-file".to_owned(), pw_path.clone()],
        ),
    ] {
        let src = tempfile::tempdir().unwrap();
        make_tree(src.path(), false);
        let out = tempfile::tempdir().unwrap();
        let keys = Keys {
            _dir: tempfile::tempdir().unwrap(),
            key: d.join(key),
            public: d.join(public),
        };
        let extra: Vec<&str> = extra.iter().map(|s| s.as_str()).collect();
        let o = build(src.path(), out.path(), &keys, &extra);
        assert!(o.status.success(), "{key}: {}", stderr(&o));
        let o = run(tool("minisign")
            .args(["-V", "-H", "-p"])
            .arg(&keys.public)
            .arg("-m")
            .arg(out.path().join("demo-1.2.3.capsule.tar.zst")));
        assert!(o.status.success(), "{key}: {}", stderr(&o));
    }

    // Wrong password: a clear error, nothing written.
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false);
    let out = tempfile::tempdir().unwrap();
    fs::write(d.join("bad"), "nope\n").unwrap();
    let o = cb(&[
        "build",
        src.path().to_str().unwrap(),
        "--key",
        d.join("p.key").to_str().unwrap(),
        "--password-file",
        d.join("bad").to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Wrong password"), "{}", stderr(&o));
    assert!(listing(out.path()).is_empty());
}

#[test]
fn signatures_made_by_the_stock_cli_verify_with_our_library_and_legacy_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stock_keypair_without_password(d, "k");
    fs::write(d.join("blob"), vec![42u8; 100_000]).unwrap();
    let o = run(tool("minisign")
        .args(["-S", "-s"])
        .arg(d.join("k.key"))
        .arg("-m")
        .arg(d.join("blob"))
        .args(["-t", "cli trusted comment"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let pk = capsule::minisig::PublicKey::from_file(&d.join("k.pub")).unwrap();
    let sig = capsule::minisig::Signature::from_file(&d.join("blob.minisig")).unwrap();
    assert_eq!(sig.key_id, pk.key_id);
    sig.verify_reader(&pk, fs::File::open(d.join("blob")).unwrap())
        .unwrap();

    let o = run(tool("minisign")
        .args(["-S", "-l", "-s"])
        .arg(d.join("k.key"))
        .arg("-m")
        .arg(d.join("blob"))
        .arg("-x")
        .arg(d.join("blob.legacy")));
    assert!(o.status.success(), "{}", stderr(&o));
    let err = capsule::minisig::Signature::from_file(&d.join("blob.legacy")).unwrap_err();
    assert!(err.to_string().contains("legacy Ed"), "{err}");
}

/// Builds a good capsule and returns (out dir, archive path, keys).
fn good_capsule() -> (tempfile::TempDir, PathBuf, Keys) {
    let keys = keygen();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false);
    let out = tempfile::tempdir().unwrap();
    let o = build(src.path(), out.path(), &keys, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let archive = out.path().join("demo-1.2.3.capsule.tar.zst");
    (out, archive, keys)
}

#[test]
fn inspect_refuses_tampering_wrong_keys_and_damaged_signatures() {
    let (_out, archive, keys) = good_capsule();
    let sig = PathBuf::from(format!("{}.minisig", archive.display()));
    let inspect = |pubkey: &Path| {
        cb(&[
            "inspect",
            archive.to_str().unwrap(),
            "--pubkey",
            pubkey.to_str().unwrap(),
        ])
    };
    let o = inspect(&keys.public);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("verified with"));

    // CRLF public key file with trailing blanks still works.
    let crlf = keys.public.with_extension("crlf");
    let text = fs::read_to_string(&keys.public)
        .unwrap()
        .replace('\n', " \r\n");
    fs::write(&crlf, text).unwrap();
    assert!(inspect(&crlf).status.success());

    // Wrong key.
    let other = keygen();
    let o = inspect(&other.public);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("was signed by key"), "{}", stderr(&o));

    // Truncated signature.
    let good_sig = fs::read_to_string(&sig).unwrap();
    fs::write(&sig, &good_sig[..good_sig.len() / 2]).unwrap();
    let o = inspect(&keys.public);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("signature"), "{}", stderr(&o));

    // Huge comment line.
    let huge = good_sig.replacen(
        "untrusted comment:",
        &format!("untrusted comment: {}", "x".repeat(3000)),
        1,
    );
    fs::write(&sig, huge).unwrap();
    let o = inspect(&keys.public);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("longer than 1024"), "{}", stderr(&o));
    fs::write(&sig, &good_sig).unwrap();

    // Tampered archive: one byte flipped in the middle.
    let mut bytes = fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&archive, &bytes).unwrap();
    let o = inspect(&keys.public);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not verify"), "{}", stderr(&o));
}

/// Each case: how to break the source tree, and what the error must say. The
/// output folder must stay empty.
#[test]
fn bad_inputs_give_clear_errors_and_leave_no_output() {
    type Breaker = fn(&Path);
    let cases: Vec<(&str, Breaker, &str)> = vec![
        (
            "missing manifest",
            |p| fs::remove_file(p.join("capsule.yml")).unwrap(),
            "no capsule.yml",
        ),
        (
            "invalid YAML",
            |p| fs::write(p.join("capsule.yml"), "name: [\n").unwrap(),
            "capsule.yml:1",
        ),
        (
            "unknown field",
            |p| {
                fs::write(
                    p.join("capsule.yml"),
                    "name: demo\nversion: 1.2.3\ncolour: red\n",
                )
                .unwrap()
            },
            "unknown field `colour`",
        ),
        (
            "bad version",
            |p| fs::write(p.join("capsule.yml"), "name: demo\nversion: one\n").unwrap(),
            "field version",
        ),
        (
            "bad slice",
            |p| {
                fs::write(
                    p.join("capsule.yml"),
                    "name: demo\nversion: 1.2.3\nservices:\n  - name: demo\n    slice: system.slice\n",
                )
                .unwrap()
            },
            "capsule.yml:5: field services[0].slice",
        ),
        (
            "socket in the tree",
            |p| {
                let _l = std::os::unix::net::UnixListener::bind(p.join("lib/app.sock")).unwrap();
            },
            "is a socket",
        ),
        (
            "escaping symlink",
            |p| std::os::unix::fs::symlink("../../etc/passwd", p.join("bin/passwd")).unwrap(),
            "leaves the tree",
        ),
        (
            "absolute symlink",
            |p| std::os::unix::fs::symlink("/etc/passwd", p.join("bin/passwd")).unwrap(),
            "absolute path",
        ),
        (
            "flow-style manifest the format line would break",
            |p| {
                fs::write(
                    p.join("capsule.yml"),
                    "{name: demo, version: 1.2.3, entrypoint: bin/start.sh}\n",
                )
                .unwrap()
            },
            "add `format: 1` as its first line",
        ),
        (
            "entrypoint is a folder",
            |p| {
                fs::write(
                    p.join("capsule.yml"),
                    "name: demo\nversion: 1.2.3\nentrypoint: bin\n",
                )
                .unwrap()
            },
            "is a folder",
        ),
        (
            "entrypoint is not executable",
            |p| {
                fs::set_permissions(p.join("bin/start.sh"), fs::Permissions::from_mode(0o644))
                    .unwrap()
            },
            "is not executable",
        ),
        (
            "missing entrypoint",
            |p| fs::remove_file(p.join("bin/start.sh")).unwrap(),
            "entrypoint bin/start.sh is not in",
        ),
    ];
    let keys = keygen();
    for (what, brk, want) in cases {
        let src = tempfile::tempdir().unwrap();
        make_tree(src.path(), false);
        brk(src.path());
        let out = tempfile::tempdir().unwrap();
        let o = build(src.path(), out.path(), &keys, &[]);
        assert_eq!(o.status.code(), Some(3), "{what}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(want),
            "{what}: want {want:?} in {}",
            stderr(&o)
        );
        assert!(
            listing(out.path()).is_empty(),
            "{what}: left {:?}",
            listing(out.path())
        );
    }
}

#[test]
fn unreadable_file_is_refused_before_anything_is_written() {
    // A file without read permission is unreadable only for non-root
    // users; root (as in CI) reads it anyway, so there is nothing to test.
    if is_root() {
        eprintln!("skipped: running as root, which can read any file");
        return;
    }
    let keys = keygen();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false);
    let f = src.path().join("lib/secret");
    fs::write(&f, "x").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o000)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = build(src.path(), out.path(), &keys, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("lib/secret"), "{}", stderr(&o));
    assert!(listing(out.path()).is_empty());
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn three_positional_form_and_default_manifest() {
    let keys = keygen();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false);
    fs::remove_file(src.path().join("capsule.yml")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = cb(&[
        "build",
        "--out",
        out.path().to_str().unwrap(),
        "svc",
        "0.9.0",
        src.path().to_str().unwrap(),
        "--key",
        keys.key.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cb(&[
        "inspect",
        out.path()
            .join("svc-0.9.0.capsule.tar.zst")
            .to_str()
            .unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["manifest"]["entrypoint"], "bin/start.sh");
    assert_eq!(v["manifest"]["services"][0]["name"], "svc");
    assert_eq!(v["manifest"]["format"], 1);

    // Name on the command line that disagrees with the manifest.
    make_tree_manifest_only(src.path());
    let o = cb(&[
        "build",
        src.path().to_str().unwrap(),
        "--name",
        "other",
        "--key",
        keys.key.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("manifest says name demo"),
        "{}",
        stderr(&o)
    );
}

fn make_tree_manifest_only(p: &Path) {
    fs::write(p.join("capsule.yml"), "name: demo\nversion: 1.2.3\n").unwrap();
}

#[test]
fn skip_sign_warns_and_marks_the_metadata() {
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false);
    let out = tempfile::tempdir().unwrap();
    let o = cb(&[
        "build",
        src.path().to_str().unwrap(),
        "--skip-sign",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("UNSIGNED"), "{}", stderr(&o));
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(out.path().join("demo-1.2.3.build.json")).unwrap())
            .unwrap();
    assert_eq!(json["unsigned"], true);
    assert!(
        !out.path()
            .join("demo-1.2.3.capsule.tar.zst.minisig")
            .exists()
    );

    // Without a key and without --skip-sign: refused.
    let o = cb(&[
        "build",
        src.path().to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no signing key"), "{}", stderr(&o));
}

#[test]
fn keygen_writes_a_private_secret_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let o = cb(&[
        "keygen",
        "--out",
        dir.path().to_str().unwrap(),
        "--name",
        "ci",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mode = fs::metadata(dir.path().join("ci.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let o = cb(&[
        "keygen",
        "--out",
        dir.path().to_str().unwrap(),
        "--name",
        "ci",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("refusing to overwrite"),
        "{}",
        stderr(&o)
    );
    // The stock CLI reads our public key.
    fs::write(dir.path().join("f"), "data").unwrap();
    let o = run(tool("minisign")
        .args(["-V", "-p"])
        .arg(dir.path().join("ci.pub"))
        .arg("-m")
        .arg(dir.path().join("f")));
    // No signature exists: minisign must fail on the missing .minisig, not
    // on the key.
    assert!(!o.status.success());
    assert!(
        !stderr(&o).to_lowercase().contains("public key"),
        "{}",
        stderr(&o)
    );

    // A password-protected key signs with --password-env.
    let o = run(Command::new(BIN)
        .args([
            "keygen",
            "--out",
            dir.path().to_str().unwrap(),
            "--name",
            "enc",
            "--password-env",
            "TEST_ONLY_PW",
        ])
        .env("DICKBOX_CONFIG", "/dev/null")
        .env("TEST_ONLY_PW", "test-only-secret"));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = fs::read_to_string(dir.path().join("enc.key")).unwrap();
    assert!(!text.contains("test-only-secret"));
}

#[test]
fn an_output_folder_inside_the_source_is_left_out() {
    let keys = keygen();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false);
    let out = src.path().join("dist");
    for _ in 0..2 {
        let o = build(src.path(), &out, &keys, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = cb(&[
        "inspect",
        out.join("demo-1.2.3.capsule.tar.zst").to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let paths: Vec<&str> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(!paths.iter().any(|p| p.starts_with("dist")), "{paths:?}");
}

#[test]
fn a_bom_is_dropped_and_out_equal_to_src_is_refused() {
    let keys = keygen();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false);
    let text = fs::read_to_string(src.path().join("capsule.yml")).unwrap();
    fs::write(src.path().join("capsule.yml"), format!("\u{feff}{text}")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = build(src.path(), out.path(), &keys, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cb(&[
        "inspect",
        out.path()
            .join("demo-1.2.3.capsule.tar.zst")
            .to_str()
            .unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = build(src.path(), src.path(), &keys, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is the source folder"),
        "{}",
        stderr(&o)
    );
}

/// A git checkout that git refuses to read (owned by another user) must not
/// silently change the archive's mtimes: capsule-build warns.
#[test]
fn an_unreadable_git_checkout_is_reported() {
    if !is_root() {
        eprintln!("skipped: needs root to hand the checkout to another user");
        return;
    }
    let keys = keygen();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false);
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(src.path())
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .expect("git")
    };
    assert!(git(&["init", "-q"]).status.success());
    assert!(git(&["add", "."]).status.success());
    assert!(git(&["commit", "-q", "-m", "x"]).status.success());
    let o = Command::new("chown")
        .args(["-R", "nobody"])
        .arg(src.path())
        .status()
        .unwrap();
    assert!(o.success());
    let out = tempfile::tempdir().unwrap();
    let o = build(src.path(), out.path(), &keys, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("git failed"), "{}", stderr(&o));
}
