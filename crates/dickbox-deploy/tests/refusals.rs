//! Every refusal of `dickbox-deploy verify` on real files: signatures made
//! with real keys over real tar+zstd archives crafted to attack the
//! extractor. Each case must exit 3, name what was wrong, and leave nothing
//! behind in the releases folder or outside it. Nothing here touches systemd.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use capsule::minisig::{SigningKey, generate_keypair};
use capsule::trusted::TrustedComment;

const BIN: &str = env!("CARGO_BIN_EXE_dickbox-deploy");

struct Host {
    root: tempfile::TempDir,
    key: SigningKey,
    key_id: String,
}

impl Host {
    /// A host root with one trusted key.
    fn new() -> Host {
        let root = tempfile::tempdir().unwrap();
        let (pk, sk, id) = generate_keypair(None).unwrap();
        let trust = root.path().join("trust/minisign");
        fs::create_dir_all(&trust).unwrap();
        fs::write(trust.join("ci.pub"), pk).unwrap();
        fs::write(root.path().join("sk"), sk).unwrap();
        let key = SigningKey::load(&root.path().join("sk"), None).unwrap();
        Host {
            root,
            key,
            key_id: id.to_string(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.path().join(p)
    }

    fn deploy(&self, args: &[&str]) -> Output {
        self.deploy_with(args, &[])
    }

    /// Runs dickbox-deploy against this host root with more environment.
    fn deploy_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let r = self.root.path();
        Command::new(BIN)
            .args(args)
            .env("DICKBOX_CONFIG", "/dev/null")
            .env("DICKBOX_DEPLOY_STATE_DIR", r.join("state"))
            .env("DICKBOX_DEPLOY_TRUST_DIR", r.join("trust"))
            .env("DICKBOX_DEPLOY_UNIT_DIR", r.join("units"))
            .env("DICKBOX_DEPLOY_RUNTIME_DIR", r.join("run"))
            .env("DICKBOX_DEPLOY_LOCK_PATH", r.join("lock"))
            .env("DICKBOX_DEPLOY_METRICS_DIR", r.join("metrics"))
            // Nothing here may reach systemd: a systemctl that always fails.
            .env("DICKBOX_DEPLOY_SYSTEMCTL", "/bin/false")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    /// Signs `archive` as capsule `name` `version` with the trusted key.
    fn sign(&self, archive: &Path, name: &str, version: &str) {
        let bytes = fs::read(archive).unwrap();
        let tc = TrustedComment {
            name: capsule::names::CapsuleName::parse(name).unwrap(),
            version: semver::Version::parse(version).unwrap(),
            sha256: capsule::digest::sha256_hex(&bytes),
            signed: 1_780_000_000,
        };
        let sig = self.key.sign(&bytes[..], &tc.to_string()).unwrap();
        fs::write(format!("{}.minisig", archive.display()), sig).unwrap();
    }

    fn releases_left(&self) -> Vec<String> {
        fs::read_dir(self.path("state/releases"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

const MANIFEST: &[u8] = b"format: 1\nname: demo\nversion: 1.0.0\nentrypoint: bin/start.sh\n";

enum M<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Link(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Fifo(&'a str),
    Char(&'a str),
}

/// Writes a tar+zstd archive with exactly these members, manifest first.
fn craft(path: &Path, members: &[M<'_>]) {
    let f = fs::File::create(path).unwrap();
    let enc = zstd::Encoder::new(f, 3).unwrap();
    let mut b = tar::Builder::new(enc);
    let mut add = |m: &M<'_>| {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match m {
            M::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                set_path(&mut h, p);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            M::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                set_path(&mut h, p);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            M::Link(p, t) | M::Hard(p, t) => {
                h.set_entry_type(if matches!(m, M::Link(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_mode(0o777);
                h.set_size(0);
                set_path(&mut h, p);
                h.set_link_name(t).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            M::Fifo(p) | M::Char(p) => {
                h.set_entry_type(if matches!(m, M::Fifo(_)) {
                    tar::EntryType::Fifo
                } else {
                    tar::EntryType::Char
                });
                h.set_mode(0o644);
                h.set_size(0);
                set_path(&mut h, p);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
        }
    };
    for m in members {
        add(m);
    }
    b.into_inner().unwrap().finish().unwrap().flush().unwrap();
}

/// Sets the raw path bytes, bypassing the tar crate's own `..` checks so the
/// archive holds exactly the hostile name.
fn set_path(h: &mut tar::Header, p: &str) {
    let name = &mut h.as_old_mut().name;
    name.fill(0);
    name[..p.len()].copy_from_slice(p.as_bytes());
}

fn start_sh() -> M<'static> {
    M::File("bin/start.sh", b"#!/bin/sh\nexec sleep 100\n", 0o755)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_good_capsule_verifies_and_stages_read_only() {
    let h = Host::new();
    let a = h.path("demo-1.0.0.capsule.tar.zst");
    craft(
        &a,
        &[
            M::File("capsule.yml", MANIFEST, 0o644),
            M::Dir("bin"),
            start_sh(),
        ],
    );
    h.sign(&a, "demo", "1.0.0");
    let o = h.deploy(&["verify", a.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let left = h.releases_left();
    assert_eq!(left.len(), 1, "{left:?}");
    let rel = h.path("state/releases").join(&left[0]);
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(rel.join("bin/start.sh"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o555);
    // Verifying the same capsule again is a no-op.
    let o = h.deploy(&["verify", a.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("already staged"), "{}", stderr(&o));
}

/// Each row: the archive's members, and a piece of the error. Every archive
/// is correctly signed by a trusted key, so the extractor itself must refuse.
#[test]
fn hostile_archives_are_refused_and_leave_nothing_behind() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, "untouched").unwrap();
    let victim_s = victim.to_str().unwrap().to_owned();
    let bomb = vec![0u8; 64 << 20];
    let cases: Vec<(&str, Vec<M<'_>>, &str)> = vec![
        (
            "symlink to .. then a file through it",
            vec![
                M::File("capsule.yml", MANIFEST, 0o644),
                M::Link("up", ".."),
                M::File("up/evil", b"x", 0o644),
                start_sh(),
            ],
            "leaves the tree",
        ),
        (
            "symlink to a folder inside, then a file through it",
            vec![
                M::File("capsule.yml", MANIFEST, 0o644),
                M::Dir("bin"),
                M::Link("l", "bin"),
                M::File("l/x", b"x", 0o644),
            ],
            "parent is a symlink",
        ),
        (
            "symlink then a regular file of the same name",
            vec![
                M::File("capsule.yml", MANIFEST, 0o644),
                M::Link("f", &victim_s),
                M::File("f", b"pwned", 0o644),
            ],
            "absolute path",
        ),
        (
            "relative symlink then a file of the same name",
            vec![
                M::File("capsule.yml", MANIFEST, 0o644),
                M::Dir("bin"),
                M::Link("bin/f", "../x"),
                M::File("bin/f", b"x", 0o644),
            ],
            "duplicate member",
        ),
        (
            "symlink then a directory of the same name",
            vec![
                M::File("capsule.yml", MANIFEST, 0o644),
                M::Dir("bin"),
                M::Link("bin/d", "../bin"),
                M::Dir("bin/d"),
            ],
            "duplicate member",
        ),
        (
            "absolute path",
            vec![
                M::File("capsule.yml", MANIFEST, 0o644),
                M::File("/tmp/evil", b"x", 0o644),
            ],
            "relative",
        ),
        (
            "dot-dot path",
            vec![
                M::File("capsule.yml", MANIFEST, 0o644),
                M::File("../evil", b"x", 0o644),
            ],
            "..",
        ),
        (
            "hard link",
            vec![
                M::File("capsule.yml", MANIFEST, 0o644),
                M::Hard("h", "capsule.yml"),
            ],
            "hard links",
        ),
        (
            "device node",
            vec![M::File("capsule.yml", MANIFEST, 0o644), M::Char("dev")],
            "device nodes",
        ),
        (
            "FIFO",
            vec![M::File("capsule.yml", MANIFEST, 0o644), M::Fifo("fifo")],
            "FIFOs",
        ),
        (
            "setuid",
            vec![
                M::File("capsule.yml", MANIFEST, 0o644),
                M::File("suid", b"x", 0o4755),
            ],
            "setuid",
        ),
        (
            "setgid",
            vec![
                M::File("capsule.yml", MANIFEST, 0o644),
                M::File("sgid", b"x", 0o2755),
            ],
            "setgid",
        ),
        (
            "duplicate member",
            vec![
                M::File("capsule.yml", MANIFEST, 0o644),
                M::File("a", b"1", 0o644),
                M::File("a", b"2", 0o644),
            ],
            "duplicate member",
        ),
        (
            "manifest not first",
            vec![
                M::File("a", b"1", 0o644),
                M::File("capsule.yml", MANIFEST, 0o644),
            ],
            "first member",
        ),
        (
            "decompression bomb",
            vec![
                M::File("capsule.yml", MANIFEST, 0o644),
                M::File("zeros", &bomb, 0o644),
            ],
            "decompression bomb",
        ),
        (
            "missing entrypoint",
            vec![M::File("capsule.yml", MANIFEST, 0o644)],
            "entrypoint bin/start.sh",
        ),
    ];
    for (what, members, want) in cases {
        let h = Host::new();
        let a = h.path("demo-1.0.0.capsule.tar.zst");
        craft(&a, &members);
        h.sign(&a, "demo", "1.0.0");
        let o = h.deploy(&["verify", a.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(3), "{what}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(want),
            "{what}: want {want:?} in {}",
            stderr(&o)
        );
        assert!(
            h.releases_left().is_empty(),
            "{what}: left {:?}",
            h.releases_left()
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched", "{what}");
        assert!(
            !h.path("state/evil").exists() && !h.path("evil").exists(),
            "{what}"
        );
    }
}

/// Each row: how to spoil a good, signed capsule, and the rule that refuses.
#[test]
fn bad_signatures_are_refused_before_anything_is_written() {
    type Spoil = fn(&Host, &Path);
    let cases: Vec<(&str, Spoil, &str)> = vec![
        (
            "unsigned",
            |_, a| fs::remove_file(format!("{}.minisig", a.display())).unwrap(),
            "unsigned capsules are never deployed",
        ),
        (
            "tampered archive",
            |_, a| {
                let mut b = fs::read(a).unwrap();
                let n = b.len() - 10;
                b[n] ^= 1;
                fs::write(a, b).unwrap();
            },
            "does not verify",
        ),
        (
            "truncated archive",
            |_, a| {
                let b = fs::read(a).unwrap();
                fs::write(a, &b[..b.len() / 2]).unwrap();
            },
            "does not verify",
        ),
        (
            "truncated signature",
            |_, a| {
                let p = format!("{}.minisig", a.display());
                let s = fs::read_to_string(&p).unwrap();
                fs::write(&p, &s[..s.len() - 30]).unwrap();
            },
            "signature",
        ),
        (
            "signed by an untrusted key",
            |_, a| {
                let (_, sk, _) = generate_keypair(None).unwrap();
                let d = tempfile::tempdir().unwrap();
                fs::write(d.path().join("k"), sk).unwrap();
                let k = SigningKey::load(&d.path().join("k"), None).unwrap();
                let bytes = fs::read(a).unwrap();
                let tc = format!(
                    "dickbox-capsule:1 name=demo version=1.0.0 sha256={} signed=1",
                    capsule::digest::sha256_hex(&bytes)
                );
                fs::write(
                    format!("{}.minisig", a.display()),
                    k.sign(&bytes[..], &tc).unwrap(),
                )
                .unwrap();
            },
            "does not trust",
        ),
        (
            "revoked key",
            |h, _| {
                fs::write(
                    h.path("trust/revoked"),
                    format!("# revoked\n{}\n", h.key_id.to_lowercase()),
                )
                .unwrap()
            },
            "revoked key",
        ),
        (
            "trusted comment names another digest",
            |h, a| {
                let bytes = fs::read(a).unwrap();
                let tc = format!(
                    "dickbox-capsule:1 name=demo version=1.0.0 sha256={} signed=1",
                    "0".repeat(64)
                );
                fs::write(
                    format!("{}.minisig", a.display()),
                    h.key.sign(&bytes[..], &tc).unwrap(),
                )
                .unwrap();
            },
            "names sha256",
        ),
        (
            "trusted comment names another version",
            |h, a| {
                let bytes = fs::read(a).unwrap();
                let tc = format!(
                    "dickbox-capsule:1 name=demo version=9.0.0 sha256={} signed=1",
                    capsule::digest::sha256_hex(&bytes)
                );
                fs::write(
                    format!("{}.minisig", a.display()),
                    h.key.sign(&bytes[..], &tc).unwrap(),
                )
                .unwrap();
            },
            "signature is for demo 9.0.0",
        ),
        (
            "legacy Ed signature",
            |_, a| {
                // Flip the algorithm bytes from ED to Ed: refused by name,
                // before any cryptography.
                use base64::Engine;
                let p = format!("{}.minisig", a.display());
                let s = fs::read_to_string(&p).unwrap();
                let mut lines: Vec<String> = s.lines().map(str::to_owned).collect();
                let e = base64::engine::general_purpose::STANDARD;
                let mut raw = e.decode(&lines[1]).unwrap();
                raw[1] = b'd';
                lines[1] = e.encode(raw);
                fs::write(&p, lines.join("\n")).unwrap();
            },
            "legacy Ed",
        ),
        (
            "not an archive",
            |h, a| {
                fs::write(a, b"plain text, not zstd").unwrap();
                h.sign(a, "demo", "1.0.0");
            },
            "neither zstd nor gzip",
        ),
    ];
    for (what, spoil, want) in cases {
        let h = Host::new();
        let a = h.path("demo-1.0.0.capsule.tar.zst");
        craft(
            &a,
            &[
                M::File("capsule.yml", MANIFEST, 0o644),
                M::Dir("bin"),
                start_sh(),
            ],
        );
        h.sign(&a, "demo", "1.0.0");
        spoil(&h, &a);
        let o = h.deploy(&["verify", a.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(3), "{what}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(want),
            "{what}: want {want:?} in {}",
            stderr(&o)
        );
        // Said once: errors used to repeat their cause after themselves.
        if want != "signature" {
            assert_eq!(
                stderr(&o).matches(want).count(),
                1,
                "{what}: repeated: {}",
                stderr(&o)
            );
        }
        assert!(
            h.releases_left().is_empty(),
            "{what}: left {:?}",
            h.releases_left()
        );
    }
}

#[test]
fn unknown_config_keys_and_overrides_are_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("dickbox.yml");
    fs::write(&cfg, "deploy:\n  keep: 2\n  colour: red\n").unwrap();
    let o = Command::new(BIN)
        .args(["check-config", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("line 3") && stderr(&o).contains("colour"),
        "{}",
        stderr(&o)
    );
    let o = Command::new(BIN)
        .args(["check-config"])
        .env("DICKBOX_CONFIG", "/dev/null")
        .env("DICKBOX_DEPLOY_KEEPP", "2")
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("DICKBOX_DEPLOY_KEEPP"),
        "{}",
        stderr(&o)
    );
    fs::write(&cfg, "deploy:\n  keep: 2\nzmq:\n  anything: 1\n").unwrap();
    let o = Command::new(BIN)
        .args(["check-config", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"keep\": 2"));
}

/// Host policy (`deploy.require`) against which signatures a capsule carries.
/// Signatures: minisign by the trusted key, cosign by a trusted P-256 key
/// (made with openssl, as operators would, when available; else our own
/// key generator).
#[test]
fn signature_policy_matrix() {
    use capsule::sigstore::{generate_cosign_keypair, sign_cosign};
    let cases: &[(&str, bool, bool, Result<(), &str>)] = &[
        ("minisign", true, false, Ok(())),
        (
            "minisign",
            false,
            true,
            Err("unsigned capsules are never deployed"),
        ),
        ("minisign", true, true, Ok(())),
        ("sigstore", false, true, Ok(())),
        ("sigstore", true, false, Err("needs a Sigstore signature")),
        ("both", true, true, Ok(())),
        ("both", true, false, Err("minisign alone is not enough")),
        (
            "both",
            false,
            true,
            Err("unsigned capsules are never deployed"),
        ),
        ("any", true, false, Ok(())),
        ("any", false, true, Ok(())),
        (
            "any",
            false,
            false,
            Err("needs a minisign or Sigstore signature"),
        ),
    ];
    let (public_pem, private_pem) = generate_cosign_keypair().unwrap();
    for (policy, with_minisign, with_cosign, want) in cases {
        let h = Host::new();
        let kd = h.path("trust/sigstore/keys");
        fs::create_dir_all(&kd).unwrap();
        fs::write(kd.join("ci.pem"), &public_pem).unwrap();
        let a = h.path("demo-1.0.0.capsule.tar.zst");
        craft(
            &a,
            &[
                M::File("capsule.yml", MANIFEST, 0o644),
                M::Dir("bin"),
                start_sh(),
            ],
        );
        if *with_minisign {
            h.sign(&a, "demo", "1.0.0");
        }
        if *with_cosign {
            use sha2::Digest;
            let digest: [u8; 32] = sha2::Sha256::digest(fs::read(&a).unwrap()).into();
            let (sig, _) = sign_cosign(&digest, &private_pem, "test key").unwrap();
            fs::write(format!("{}.cosign.sig", a.display()), sig).unwrap();
        }
        let o = h.deploy_with(
            &["verify", a.to_str().unwrap()],
            &[("DICKBOX_DEPLOY_REQUIRE", policy)],
        );
        let case = format!("require={policy} minisign={with_minisign} cosign={with_cosign}");
        match want {
            Ok(()) => assert!(o.status.success(), "{case}: {}", stderr(&o)),
            Err(msg) => {
                assert_eq!(o.status.code(), Some(3), "{case}: {}", stderr(&o));
                assert!(
                    stderr(&o).contains(msg),
                    "{case}: want {msg:?} in {}",
                    stderr(&o)
                );
                assert!(h.releases_left().is_empty(), "{case}");
            }
        }
    }

    // A cosign signature by an untrusted key is a refusal even when the
    // policy would be satisfied by minisign alone under `any`.
    let h = Host::new();
    fs::create_dir_all(h.path("trust/sigstore/keys")).unwrap();
    fs::write(h.path("trust/sigstore/keys/ci.pem"), &public_pem).unwrap();
    let (_, other_private) = generate_cosign_keypair().unwrap();
    let a = h.path("demo-1.0.0.capsule.tar.zst");
    craft(
        &a,
        &[
            M::File("capsule.yml", MANIFEST, 0o644),
            M::Dir("bin"),
            start_sh(),
        ],
    );
    h.sign(&a, "demo", "1.0.0");
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(fs::read(&a).unwrap()).into();
    let (sig, _) = sign_cosign(&digest, &other_private, "rogue").unwrap();
    fs::write(format!("{}.cosign.sig", a.display()), sig).unwrap();
    let o = h.deploy_with(
        &["verify", a.to_str().unwrap()],
        &[("DICKBOX_DEPLOY_REQUIRE", "any")],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("does not verify with any trusted key"),
        "{}",
        stderr(&o)
    );
}

/// Raw tar bytes: the standard members, then whatever `extra` appends.
fn raw_tar(extra: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(MANIFEST.len() as u64);
    h.set_cksum();
    b.append_data(&mut h, "capsule.yml", MANIFEST).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "bin/", &[][..]).unwrap();
    let script = b"#!/bin/sh\nexec sleep 100\n";
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(script.len() as u64);
    b.append_data(&mut h, "bin/start.sh", &script[..]).unwrap();
    extra(&mut b);
    b.into_inner().unwrap()
}

fn zstd_file(path: &Path, frames: &[&[u8]]) {
    let mut out = Vec::new();
    for f in frames {
        out.extend(zstd::encode_all(*f, 3).unwrap());
    }
    fs::write(path, out).unwrap();
}

/// A member header written by hand, with `data` after it (padded), so the
/// header can lie about the data.
fn raw_member(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    header_size: u64,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(header_size);
    set_path(&mut h, name);
    h.set_cksum();
    let w = b.get_mut();
    w.extend_from_slice(h.as_bytes());
    w.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    w.extend(std::iter::repeat_n(0u8, pad));
}

/// Cheap deterministic incompressible bytes.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Decompression bombs and smuggled data that hide from declared sizes
/// (reported by a break-it session: PAX size overrides, huge GNU long names,
/// data inside directory members, data after the end of the archive). Each
/// row: the raw tar (one zstd frame unless noted), extra env, and the error.
#[test]
fn bombs_hidden_from_declared_sizes_are_refused() {
    let big_zeros = vec![0u8; 48 << 20];
    type Case = (
        &'static str,
        Vec<Vec<u8>>,
        Vec<(&'static str, &'static str)>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "PAX size overrides a zero header size",
            vec![raw_tar(|b| {
                b.append_pax_extensions([("size", format!("{}", 48 << 20).as_bytes())])
                    .unwrap();
                raw_member(b, "bin/big", tar::EntryType::Regular, 0, &big_zeros);
            })],
            vec![("DICKBOX_DEPLOY_MAX_UNPACKED", "1M")],
            "content exceeds",
        ),
        (
            "PAX size override, default limits: the ratio",
            vec![raw_tar(|b| {
                b.append_pax_extensions([("size", format!("{}", 48 << 20).as_bytes())])
                    .unwrap();
                raw_member(b, "bin/big", tar::EntryType::Regular, 0, &big_zeros);
                raw_member(b, "bin/more", tar::EntryType::Regular, 48 << 20, &big_zeros);
            })],
            vec![],
            "ratio above",
        ),
        (
            "a 40 MiB GNU long name",
            vec![raw_tar(|b| {
                raw_member(
                    b,
                    "././@LongLink",
                    tar::EntryType::GNULongName,
                    40 << 20,
                    &vec![b'a'; 40 << 20],
                );
                raw_member(b, "x", tar::EntryType::Regular, 0, &[]);
            })],
            vec![],
            "tar metadata",
        ),
        (
            "data hidden in a directory member",
            vec![raw_tar(|b| {
                raw_member(
                    b,
                    "d/",
                    tar::EntryType::Directory,
                    40 << 20,
                    &vec![0u8; 40 << 20],
                );
            })],
            vec![],
            "tar metadata",
        ),
        (
            "a member after the end-of-archive marker",
            vec![{
                let mut t = raw_tar(|_| {});
                t.extend(vec![0u8; 1024]);
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(4);
                set_path(&mut h, "hidden");
                h.set_cksum();
                t.extend_from_slice(h.as_bytes());
                t.extend_from_slice(b"evil");
                t.extend(vec![0u8; 508 + 1024]);
                t
            }],
            vec![],
            "data after the end of the tar archive",
        ),
        (
            "a second zstd frame",
            vec![raw_tar(|_| {}), raw_tar(|_| {})],
            vec![],
            "data after the end of the tar archive",
        ),
    ];
    for (what, frames, env, want) in cases {
        let h = Host::new();
        let a = h.path("demo-1.0.0.capsule.tar.zst");
        let frames: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        zstd_file(&a, &frames);
        h.sign(&a, "demo", "1.0.0");
        let o = h.deploy_with(&["verify", a.to_str().unwrap()], &env);
        assert_eq!(o.status.code(), Some(3), "{what}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(want),
            "{what}: want {want:?} in {}",
            stderr(&o)
        );
        assert!(
            stderr(&o).len() < 4096,
            "{what}: error output is {} bytes",
            stderr(&o).len()
        );
        assert!(
            h.releases_left().is_empty(),
            "{what}: left {:?}",
            h.releases_left()
        );
    }
}

/// A large incompressible file is an ordinary capsule, not a bomb (a single
/// 80 MiB file of model weights was refused by the ratio check once, because
/// the declared size was counted before its bytes were read).
#[test]
fn a_large_incompressible_file_is_not_a_bomb() {
    let h = Host::new();
    let a = h.path("demo-1.0.0.capsule.tar.zst");
    let weights = noise(80 << 20);
    let t = raw_tar(|b| {
        let mut hd = tar::Header::new_gnu();
        hd.set_entry_type(tar::EntryType::Regular);
        hd.set_mode(0o644);
        hd.set_size(weights.len() as u64);
        b.append_data(&mut hd, "weights.bin", &weights[..]).unwrap();
    });
    zstd_file(&a, &[&t]);
    h.sign(&a, "demo", "1.0.0");
    let o = h.deploy(&["verify", a.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `verify` refuses what `deploy` would: a manifest whose public_key is
/// another key than the trusted one that verified (it once said "verified").
#[test]
fn verify_compares_the_manifest_public_key_like_deploy() {
    let h = Host::new();
    let (other_pk, _, _) = generate_keypair(None).unwrap();
    let other_b64 = other_pk.lines().nth(1).unwrap();
    let manifest = format!(
        "format: 1\nname: demo\nversion: 1.0.0\nentrypoint: bin/start.sh\npublic_key: {other_b64}\n"
    );
    let a = h.path("demo-1.0.0.capsule.tar.zst");
    craft(
        &a,
        &[
            M::File("capsule.yml", manifest.as_bytes(), 0o644),
            M::Dir("bin"),
            start_sh(),
        ],
    );
    h.sign(&a, "demo", "1.0.0");
    let o = h.deploy(&["verify", a.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not the host key"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("demo-1.0.0.capsule.tar.zst"),
        "names the file: {}",
        stderr(&o)
    );
    assert!(h.releases_left().is_empty(), "{:?}", h.releases_left());
}
