//! The bus against pyzmq peers over real ipc sockets: encrypted delivery,
//! refusal of unknown client keys, a numbered stream across several
//! rotations, and old-key clients cut only after the grace period.

mod common;

use std::time::Duration;

use common::{Host, finish, now, unix};

fn received(v: &serde_json::Value) -> Vec<u64> {
    v["received"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn pyzmq_subscriber_receives_through_the_bus_and_unknown_key_is_refused() {
    let host = Host::new();
    host.rotate();
    let pub_cert = host.allowed_client("test-only-pub");
    let sub_cert = host.allowed_client("test-only-sub");
    let stranger = host.unknown_client("test-only-stranger");
    // A damaged file among the allowed clients: skipped, warned about once.
    std::fs::write(host.keys().join("bus/clients/test-only-broken.key"), "junk").unwrap();
    let _bus = host.start_bus();

    let sub_out = host.path("sub.json");
    let ready = host.path("sub.ready");
    let sub = host.spawn_peer(
        "sub",
        &sub_cert,
        false,
        &[
            "--out",
            sub_out.to_str().unwrap(),
            "--duration",
            "15",
            "--ready",
            ready.to_str().unwrap(),
        ],
    );
    let bad_out = host.path("bad.json");
    let bad_ready = host.path("bad.ready");
    let bad = host.spawn_peer(
        "sub",
        &stranger,
        false,
        &[
            "--out",
            bad_out.to_str().unwrap(),
            "--duration",
            "4",
            "--ready",
            bad_ready.to_str().unwrap(),
        ],
    );
    common::wait_for(Duration::from_secs(10), || {
        ready.exists() && bad_ready.exists()
    });

    let publisher = host.spawn_peer(
        "pub",
        &pub_cert,
        false,
        &["--rate", "2000", "--count", "500"],
    );
    let good = finish(sub, &sub_out, Duration::from_secs(30));
    let refused = finish(bad, &bad_out, Duration::from_secs(30));
    finish_quietly(publisher);

    assert_eq!(
        received(&good),
        (0..500).collect::<Vec<_>>(),
        "allowed subscriber"
    );
    assert!(good["handshake_ok"].is_number());
    assert!(
        refused["auth_failed"].is_number(),
        "unknown key must fail the handshake: {refused}"
    );
    assert!(refused["handshake_ok"].is_null());
    assert!(received(&refused).is_empty(), "unknown key received data");
    assert!(
        host.bus_log().contains("client key refused"),
        "{}",
        host.bus_log()
    );
    // Three handshakes (subscriber, stranger, publisher), one warning.
    assert_eq!(
        host.bus_log()
            .matches("skipping unreadable client certificate")
            .count(),
        1,
        "{}",
        host.bus_log()
    );
}

fn finish_quietly(mut child: std::process::Child) {
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
}

#[test]
fn numbered_stream_survives_several_rotations_without_loss_or_duplicates() {
    let mut host = Host::new();
    host.grace = "4s".into();
    host.retention = "4s".into();
    host.rotate();
    let pub_cert = host.allowed_client("test-only-pub");
    let sub_cert = host.allowed_client("test-only-sub");
    let _bus = host.start_bus();

    let subs: Vec<_> = (0..3)
        .map(|i| {
            let out = host.path(&format!("sub{i}.json"));
            let ready = host.path(&format!("sub{i}.ready"));
            let child = host.spawn_peer(
                "sub",
                &sub_cert,
                true,
                &[
                    "--out",
                    out.to_str().unwrap(),
                    "--duration",
                    "40",
                    "--ready",
                    ready.to_str().unwrap(),
                ],
            );
            (child, out, ready)
        })
        .collect();
    common::wait_for(Duration::from_secs(10), || {
        subs.iter().all(|(_, _, r)| r.exists())
    });

    let count = 5000u64;
    let pub_out = host.path("pub.json");
    let publisher = host.spawn_peer(
        "pub",
        &pub_cert,
        true,
        &[
            "--rate",
            "500",
            "--count",
            &count.to_string(),
            "--out",
            pub_out.to_str().unwrap(),
        ],
    );
    let rotations = 4;
    for _ in 0..rotations {
        std::thread::sleep(Duration::from_secs(2));
        host.rotate();
    }
    let published = finish(publisher, &pub_out, Duration::from_secs(60));
    assert_eq!(
        published["switches"].as_array().unwrap().len(),
        rotations,
        "publisher followed every rotation: {published}"
    );
    for (i, (child, out, _)) in subs.into_iter().enumerate() {
        let v = finish(child, &out, Duration::from_secs(60));
        let got = received(&v);
        let missing = (0..count).filter(|n| !got.contains(n)).count();
        assert_eq!(
            got.len() as u64,
            count,
            "subscriber {i}: count (missing {missing})"
        );
        assert_eq!(
            got,
            (0..count).collect::<Vec<_>>(),
            "subscriber {i}: sequence"
        );
        assert_eq!(
            v["switches"].as_array().unwrap().len(),
            rotations,
            "subscriber {i} followed every rotation"
        );
        assert_eq!(v["forged_events"], 0);
    }
    // Only current and previous are kept; older ones were pruned.
    let list: serde_json::Value = serde_json::from_str(&host.ok(&["list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
}

#[test]
fn old_key_clients_are_cut_only_after_the_grace_period() {
    let mut host = Host::new();
    host.grace = "3s".into();
    host.rotate();
    let pub_cert = host.allowed_client("test-only-pub");
    let sub_cert = host.allowed_client("test-only-sub");
    let _bus = host.start_bus();

    let out = host.path("old.json");
    let ready = host.path("old.ready");
    let old = host.spawn_peer(
        "sub",
        &sub_cert,
        false,
        &[
            "--out",
            out.to_str().unwrap(),
            "--duration",
            "20",
            "--ready",
            ready.to_str().unwrap(),
        ],
    );
    common::wait_for(Duration::from_secs(10), || ready.exists());
    let publisher = host.spawn_peer(
        "pub",
        &pub_cert,
        true,
        &["--rate", "200", "--count", "2400"],
    );
    std::thread::sleep(Duration::from_secs(1));

    let event = host.rotate();
    let rotated_at = now();
    let grace_until = unix(event["grace_until"].as_str().unwrap());
    let v = finish(old, &out, Duration::from_secs(30));
    finish_quietly(publisher);

    let cut = v["disconnected"]
        .as_f64()
        .expect("old-key client was never cut");
    assert!(
        cut >= grace_until,
        "cut at {cut}, before the grace end {grace_until}"
    );
    assert!(
        cut < grace_until + 2.0,
        "cut at {cut}, long after the grace end {grace_until}"
    );
    // Messages kept flowing to the old-key client through the grace period.
    let last = v["last_at"].as_f64().expect("old-key client got nothing");
    assert!(
        last > rotated_at + 1.0 && last > grace_until - 1.0,
        "last message at {last}: delivery stopped before the grace end {grace_until}"
    );
}

#[test]
fn tcp_port_pairs_alternate_by_generation_and_old_pair_closes_after_grace() {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let ports: Vec<u16> = (0..4).map(|_| free()).collect();
    let mut host = Host::new();
    host.grace = "2s".into();
    host.rotate();
    let list = ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    std::fs::write(
        host.path("dickbox.yml"),
        format!("zmq:\n  bus_tcp_ports: [{list}]\n"),
    )
    .unwrap();
    let listening = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
    let _bus = host.start_bus();
    // Generation 1 is odd: pair B (ports 2 and 3).
    assert!(
        listening(ports[2]) && listening(ports[3]),
        "pair B for generation 1"
    );
    assert!(!listening(ports[0]), "pair A idle");
    host.rotate();
    common::wait_for(Duration::from_secs(5), || {
        listening(ports[0]) && listening(ports[1])
    });
    assert!(listening(ports[2]), "old pair open during grace");
    common::wait_for(Duration::from_secs(6), || {
        !listening(ports[2]) && !listening(ports[3])
    });
}

#[test]
fn client_that_missed_a_rotation_learns_the_key_from_the_repeated_event() {
    let mut host = Host::new();
    host.grace = "1s".into();
    host.rotate();
    let pub_cert = host.allowed_client("test-only-pub");
    let sub_cert = host.allowed_client("test-only-sub");
    let bus = host.start_bus();
    let out = host.path("sub.json");
    let ready = host.path("sub.ready");
    let sub = host.spawn_peer(
        "sub",
        &sub_cert,
        true,
        &[
            "--out",
            out.to_str().unwrap(),
            "--duration",
            "30",
            "--ready",
            ready.to_str().unwrap(),
        ],
    );
    common::wait_for(Duration::from_secs(10), || ready.exists());

    // The bus is down while the key rotates, so nobody hears the event then,
    // and the old key's grace ends before the bus comes back.
    drop(bus);
    let event = host.rotate();
    std::thread::sleep(Duration::from_millis(1500));
    let _bus = host.start_bus();

    // The bus repeats the current event about a second after it starts.
    std::thread::sleep(Duration::from_secs(3));
    let publisher = host.spawn_peer(
        "pub",
        &pub_cert,
        false,
        &["--rate", "200", "--count", "300"],
    );
    let v = finish(sub, &out, Duration::from_secs(30));
    finish_quietly(publisher);
    assert_eq!(
        v["generation"], event["generation"],
        "subscriber moved to the new key: {v}"
    );
    assert_eq!(received(&v), (0..300).collect::<Vec<_>>());
}

#[test]
fn a_missing_previous_secret_leaves_the_current_key_served() {
    let host = Host::new();
    host.rotate();
    host.rotate();
    let dir = host.keys().join("bus");
    std::fs::remove_file(dir.join("bus-1.key_secret")).unwrap();
    let bus = host.start_bus();
    let current = host.run_dir().join("bus/current");
    assert_eq!(
        std::fs::read_link(&current).unwrap().to_str(),
        Some("2"),
        "current generation served"
    );
    common::wait_for(Duration::from_secs(5), || {
        host.bus_log()
            .contains("previous key generation is unusable")
    });
    let log = host.bus_log();
    assert!(log.contains("ERROR"), "{log}");
    assert!(log.contains("bus-1.key_secret"), "path named: {log}");
    assert_eq!(
        log.matches("previous key generation is unusable").count(),
        1,
        "logged once: {log}"
    );
    drop(bus);

    let status = host.run(&["status"]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(1), "{out}");
    assert!(
        out.contains("PROBLEM") && out.contains("bus-1.key_secret"),
        "{out}"
    );
    let list = host.run(&["list", "--json"]);
    assert_eq!(list.status.code(), Some(1));
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(
        rows[0]["problems"][0]
            .as_str()
            .unwrap()
            .contains("bus-1.key_secret")
    );
    assert_eq!(rows[1]["problems"], serde_json::json!([]));
}

#[test]
fn rotate_does_not_demote_a_current_key_whose_secret_is_broken() {
    let host = Host::new();
    host.rotate();
    let dir = host.keys().join("bus");
    std::fs::write(dir.join("bus-1.key_secret"), "truncated").unwrap();
    let event = host.rotate();
    assert_eq!(event["generation"], 2);
    assert!(event["previous_public_key"].is_null(), "{event}");
    assert!(
        std::fs::read_link(dir.join("previous")).is_err(),
        "a broken key must not become previous"
    );
    let _bus = host.start_bus();
}

#[test]
fn bus_refuses_open_folders_and_readable_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let host = Host::new();
    host.rotate();
    let dir = host.keys().join("bus");
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    for (path, open, closed, want) in [
        (
            dir.join("clients"),
            0o777,
            0o750,
            "mode 0777: writable by others",
        ),
        (dir.clone(), 0o752, 0o750, "mode 0752: writable by others"),
        (
            dir.join("bus-1.key_secret"),
            0o604,
            0o600,
            "mode 0604: readable by others",
        ),
    ] {
        mode(&path, open);
        let out = host.cmd(&["bus"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", path.display());
        assert!(
            err.contains("refusing to start") && err.contains(path.to_str().unwrap()),
            "{err}"
        );
        assert!(err.contains(want), "{err}");
        let status = host.run(&["status"]);
        assert_eq!(status.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&status.stdout).contains(want));
        mode(&path, closed);
    }
    let _bus = host.start_bus();
}

#[test]
fn a_second_bus_on_the_same_runtime_folder_is_refused() {
    let host = Host::new();
    host.rotate();
    let bus = host.start_bus();
    let out = host.cmd(&["bus"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another bus holds") && err.contains(&format!("pid {}", bus.child.id())),
        "{err}"
    );
    assert!(!err.contains("bus ready"), "{err}");
    // The first bus still owns its sockets.
    assert!(host.events_socket().exists());
    assert!(!host.bus_log().contains("ERROR"), "{}", host.bus_log());
}
