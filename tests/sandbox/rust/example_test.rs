//! The pattern for an end-to-end test against real systemd: skip with a
//! printed reason where a sandbox cannot run, boot one with the build output
//! bound read-only, run commands inside, and let `Drop` tear it down.
//! A crate's real test binds `Path::new(env!("CARGO_BIN_EXE_<bin>")).parent()`.

mod sandbox_guard;

use sandbox_guard::{INSIDE_BIN, Sandbox};

#[test]
fn transient_unit_exit_code_and_bound_binaries_reach_the_test() {
    let exe = std::env::current_exe().expect("path of this test binary");
    let bin_dir = exe.parent().expect("test binary has a parent folder");
    let Some(sandbox) = Sandbox::up("example", bin_dir) else {
        return;
    };

    let out = sandbox.exec(&["systemd-run", "--wait", "--quiet", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "systemd-run --wait: {out:?}");

    let name = exe.file_name().expect("file name").to_string_lossy();
    let inside = format!("{INSIDE_BIN}/{name}");
    let out = sandbox.exec(&["test", "-x", &inside]);
    assert!(out.status.success(), "{inside} not visible inside: {out:?}");
    let out = sandbox.exec(&["touch", &format!("{INSIDE_BIN}/written")]);
    assert!(!out.status.success(), "{INSIDE_BIN} must be read-only inside");

    sandbox.reboot();
    let out = sandbox.exec(&["systemctl", "is-system-running"]);
    assert!(out.status.success(), "after reboot: {out:?}");
}
