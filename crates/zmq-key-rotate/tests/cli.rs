//! The binary against real files: certificate interop with pyzmq both ways,
//! signatures checked by the Debian minisign CLI, configuration refusals,
//! list/status output and pruning.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::Host;
use zmq_key_rotate::store::read_cert;

#[test]
fn certificates_written_by_us_load_in_pyzmq() {
    let host = Host::new();
    let event = host.rotate();
    let dir = host.keys().join("bus");
    let public: serde_json::Value =
        serde_json::from_str(&host.peer(&["loadcert", dir.join("current").to_str().unwrap()]))
            .unwrap();
    assert_eq!(public["public"], event["public_key"]);
    assert!(
        public["secret"].is_null(),
        "public file must hold no secret"
    );
    let secret: serde_json::Value = serde_json::from_str(
        &host.peer(&["loadcert", dir.join("bus-1.key_secret").to_str().unwrap()]),
    )
    .unwrap();
    assert_eq!(secret["public"], event["public_key"]);
    let ours = read_cert(&dir.join("bus-1.key_secret")).unwrap();
    assert_eq!(
        secret["secret"].as_str().unwrap(),
        ours.secret.unwrap().to_z85()
    );
    let mode = std::fs::metadata(dir.join("bus-1.key_secret"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "secret certificate mode");
    let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o750, "identity folder mode");
}

#[test]
fn certificates_written_by_pyzmq_load_in_ours() {
    let host = Host::new();
    let peers = host.path("peers");
    let made: serde_json::Value =
        serde_json::from_str(&host.peer(&["gencert", peers.to_str().unwrap(), "test-only-py"]))
            .unwrap();
    let loaded: serde_json::Value = serde_json::from_str(&host.peer(&[
        "loadcert",
        peers.join("test-only-py.key_secret").to_str().unwrap(),
    ]))
    .unwrap();
    let public = read_cert(made["public"].as_str().unwrap().as_ref()).unwrap();
    let secret = read_cert(made["secret"].as_str().unwrap().as_ref()).unwrap();
    assert_eq!(public.public.to_z85(), loaded["public"].as_str().unwrap());
    assert!(public.secret.is_none());
    assert_eq!(
        secret.secret.unwrap().to_z85(),
        loaded["secret"].as_str().unwrap()
    );
}

#[test]
fn rotation_events_verify_with_the_minisign_cli_and_tampering_fails() {
    let host = Host::new();
    host.rotate();
    let event = host.rotate();
    let events = host.keys().join("bus/events");
    let json = events.join("2.json");
    let verify = |m: &std::path::Path, x: &std::path::Path| {
        Command::new("minisign")
            .arg("-V")
            .arg("-p")
            .arg(host.keys().join("events.pub"))
            .arg("-m")
            .arg(m)
            .arg("-x")
            .arg(x)
            .output()
            .expect("minisign CLI (apt install minisign)")
    };
    let ok = verify(&json, &events.join("2.json.minisig"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("identity=bus generation=2"));

    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(stored, event);
    for field in [
        "identity",
        "generation",
        "public_key",
        "previous_public_key",
        "created",
        "grace_until",
        "endpoint",
    ] {
        assert!(!stored[field].is_null(), "event field {field}");
    }
    let forged = host.path("forged.json");
    let text = std::fs::read_to_string(&json).unwrap();
    std::fs::write(
        &forged,
        text.replace("\"generation\":2", "\"generation\":3"),
    )
    .unwrap();
    let bad = verify(&forged, &events.join("2.json.minisig"));
    assert!(!bad.status.success(), "a changed event must not verify");
}

#[test]
fn events_key_made_by_the_minisign_cli_without_password_is_used() {
    let host = Host::new();
    let keys = host.keys();
    let out = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(keys.join("events.pub"))
        .arg("-s")
        .arg(keys.join("events.key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    host.rotate();
    let ok = Command::new("minisign")
        .arg("-Vq")
        .arg("-p")
        .arg(keys.join("events.pub"))
        .arg("-m")
        .arg(keys.join("bus/events/1.json"))
        .status()
        .unwrap();
    assert!(ok.success(), "signature by a CLI-made key must verify");
}

#[test]
fn configuration_errors_exit_2_and_name_key_and_line() {
    let mut host = Host::new();
    host.grace = String::new();
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "zmq:\n  keys_dir: /x\n  colour: red\n",
            &["check-config"],
            "colour",
        ),
        ("zmq:\n  grace: 10\n", &["check-config"], "no unit"),
        ("", &["rotate", "--identity", "Bad/Name"], "not valid"),
    ];
    for (yaml, args, want) in cases {
        std::fs::write(host.path("dickbox.yml"), yaml).unwrap();
        let out = host.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {yaml:?}: {err}");
        assert!(err.contains(want), "{args:?} {yaml:?}: {err}");
    }
    std::fs::write(
        host.path("dickbox.yml"),
        "zmq:\n  keys_dir: /x\n  colour: red\n",
    )
    .unwrap();
    let err = String::from_utf8_lossy(&host.run(&["check-config"]).stderr).into_owned();
    assert!(
        err.contains("line 3") || err.contains("3:"),
        "line number: {err}"
    );
    assert!(
        !host.keys().join("bus").exists(),
        "nothing may be written on a refused run"
    );
}

#[test]
fn check_config_reports_file_overrides_and_values() {
    let host = Host::new();
    std::fs::write(
        host.path("dickbox.yml"),
        "zmq:\n  grace: 2h\n  identities: [bus, web-api]\n",
    )
    .unwrap();
    let out = host.ok(&["check-config"]);
    assert!(out.contains("# file: "), "{out}");
    assert!(out.contains("grace = 1h"), "flag beats file: {out}");
    assert!(out.contains("identities = bus,web-api"), "{out}");
    assert!(
        out.contains("DICKBOX_ZMQ_KEY_GROUP"),
        "env override listed: {out}"
    );
}

#[test]
fn list_and_status_show_generations_and_prune_by_retention() {
    let mut host = Host::new();
    host.grace = "1s".into();
    host.retention = "2s".into();
    host.rotate();
    host.rotate();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    // Generation 1 is older than the retention and no longer previous after
    // the next rotation; generation 2 stays as previous although as old.
    let list: serde_json::Value = serde_json::from_str(&host.ok(&["list", "--json"])).unwrap();
    let g1 = &list[0];
    assert_eq!(g1["generation"], 1);
    assert_eq!(g1["role"], "previous");
    assert_eq!(g1["pruned_next"], true, "{list}");
    assert_eq!(list[1]["role"], "current");
    assert_eq!(list[1]["pruned_next"], false, "current is never pruned");

    let status: serde_json::Value = serde_json::from_str(&host.ok(&["status", "--json"])).unwrap();
    assert_eq!(status[0]["current"], 2);
    assert_eq!(status[0]["pruned_next"], serde_json::json!([1]));

    let out = host.ok(&["rotate", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["pruned"], serde_json::json!([1]));
    let dir = host.keys().join("bus");
    assert!(!dir.join("bus-1.key").exists() && !dir.join("bus-1.key_secret").exists());
    assert!(dir.join("bus-2.key").exists(), "previous kept");
    assert_eq!(
        std::fs::read_link(dir.join("current")).unwrap().to_str(),
        Some("bus-3.key")
    );
    assert_eq!(
        std::fs::read_link(dir.join("previous")).unwrap().to_str(),
        Some("bus-2.key")
    );
}

#[test]
fn pruning_never_touches_files_it_did_not_write() {
    let mut host = Host::new();
    host.retention = "1h".into();
    host.rotate();
    let dir = host.keys().join("bus");
    // Looks like one of ours by name, but the index never listed it.
    std::fs::write(dir.join("bus-0.key"), "not ours").unwrap();
    host.retention = "1h".into();
    for _ in 0..3 {
        host.rotate();
    }
    assert!(dir.join("bus-0.key").exists());
}

#[test]
fn if_missing_makes_a_first_key_only() {
    let host = Host::new();
    let first: serde_json::Value =
        serde_json::from_str(&host.ok(&["rotate", "--if-missing", "--json"])).unwrap();
    assert_eq!(first[0]["event"]["generation"], 1);
    let second: serde_json::Value =
        serde_json::from_str(&host.ok(&["rotate", "--if-missing", "--json"])).unwrap();
    assert!(second[0]["event"].is_null());
}

#[test]
fn link_to_a_foreign_file_is_refused() {
    let host = Host::new();
    host.rotate();
    let dir = host.keys().join("bus");
    std::fs::remove_file(dir.join("current")).unwrap();
    std::os::unix::fs::symlink("somebody-else.key", dir.join("current")).unwrap();
    let out = host.run(&["rotate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a generation this tool wrote"), "{err}");
}

#[test]
fn index_entries_naming_other_files_are_refused_and_nothing_is_deleted() {
    let mut host = Host::new();
    for _ in 0..3 {
        host.rotate();
    }
    let victim_dir = host.path("victims");
    std::fs::create_dir_all(&victim_dir).unwrap();
    let outside = victim_dir.join("secret-victim");
    let relative = host.path("victim");
    std::fs::write(&outside, "keep me").unwrap();
    std::fs::write(&relative, "keep me").unwrap();
    let index_path = host.keys().join("bus/generations.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    index["generations"][0]["public_file"] = "../../victim".into();
    index["generations"][0]["secret_file"] = outside.to_str().unwrap().into();
    index["generations"][0]["created"] = 0.into();
    std::fs::write(&index_path, index.to_string()).unwrap();
    host.grace = "1s".into();
    host.retention = "1s".into();
    for args in [&["rotate"][..], &["list"], &["status"]] {
        let out = host.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("entry 0") && err.contains("../../victim"),
            "{args:?}: {err}"
        );
    }
    assert!(
        outside.exists() && relative.exists(),
        "files outside deleted"
    );

    // A secret file naming another generation's file is refused too, and so
    // is a generation number listed twice.
    index["generations"][0]["public_file"] = "bus-1.key".into();
    index["generations"][0]["secret_file"] = "bus-2.key_secret".into();
    std::fs::write(&index_path, index.to_string()).unwrap();
    let err = String::from_utf8_lossy(&host.run(&["status"]).stderr).into_owned();
    assert!(err.contains("secret_file \"bus-2.key_secret\""), "{err}");
    index["generations"][0] = index["generations"][1].clone();
    std::fs::write(&index_path, index.to_string()).unwrap();
    let out = host.run(&["list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("generation 2 is listed twice"), "{err}");
}

#[test]
fn periods_too_long_for_a_date_are_refused_before_anything_is_written() {
    let mut host = Host::new();
    host.grace = "100000000d".into();
    host.retention = "100000000d".into();
    for args in [
        &["rotate", "--identity", "ev"][..],
        &["list"],
        &["check-config"],
    ] {
        let out = host.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("100 years"), "{args:?}: {err}");
    }
    assert!(!host.keys().join("ev").exists(), "nothing written");
}

#[test]
fn a_rotation_that_fails_leaves_no_orphan_key_files() {
    let host = Host::new();
    // The event cannot be stored: its path is a folder.
    std::fs::create_dir_all(host.keys().join("bus/events/1.json")).unwrap();
    let out = host.run(&["rotate"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = host.keys().join("bus");
    assert!(!dir.join("bus-1.key").exists(), "orphan public file");
    assert!(!dir.join("bus-1.key_secret").exists(), "orphan secret file");
    assert!(!dir.join("generations.json").exists());
}

#[test]
fn status_and_list_flag_truncated_and_mismatched_certificates() {
    let host = Host::new();
    host.rotate();
    host.rotate();
    let dir = host.keys().join("bus");
    // Current public certificate replaced by another generation's.
    std::fs::copy(dir.join("bus-1.key"), dir.join("bus-2.key")).unwrap();
    let out = host.run(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("PROBLEM") && text.contains("bus-2.key holds public key"),
        "{text}"
    );
    // A truncated public certificate.
    let full = std::fs::read_to_string(dir.join("bus-1.key")).unwrap();
    std::fs::write(dir.join("bus-1.key"), &full[..full.len() / 2]).unwrap();
    let out = host.run(&["list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("PROBLEM: certificate"), "{text}");
    assert!(text.contains("bus-1.key"), "{text}");
}

#[test]
fn current_as_a_plain_file_is_named_not_a_symlink() {
    let host = Host::new();
    host.rotate();
    let current = host.keys().join("bus/current");
    std::fs::remove_file(&current).unwrap();
    std::fs::write(&current, "bus-1.key").unwrap();
    for args in [&["status"][..], &["list"], &["rotate"]] {
        let out = host.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("is not a symlink"), "{args:?}: {err}");
        assert!(!err.contains("os error 22"), "{args:?}: {err}");
    }
}

#[test]
fn check_config_refuses_a_group_that_does_not_exist() {
    let host = Host::new();
    let out = host
        .cmd(&["check-config"])
        .env("DICKBOX_ZMQ_KEY_GROUP", "test-only-nogroup")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("zmq.key_group") && err.contains("no such group"),
        "{err}"
    );
    let out = host
        .cmd(&["check-config"])
        .env("DICKBOX_ZMQ_KEY_GROUP", "root")
        .output()
        .unwrap();
    assert!(out.status.success());
}
