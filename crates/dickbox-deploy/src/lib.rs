//! `dickbox-deploy`: verify a capsule against the host's keys, stage it, start
//! it beside the running version, health-check it, switch, roll back.
//!
//! `main.rs` parses arguments and maps errors to exit codes; everything else
//! is here so tests can drive it.

pub mod cli;
pub mod config;
pub mod fetch;
pub mod fsops;
pub mod haproxy;
pub mod health;
pub mod lock;
pub mod metrics;
pub mod ops;
pub mod stage;
pub mod state;
pub mod systemd;
pub mod units;
pub mod verify;

/// Journal message id of a failed deploy (for alerting; see the cookbook).
pub const MSG_DEPLOY_FAILED: &str = "7d1c6a0e3b5f4e2a9c8d1f0b2a3e4d5c";

/// Exit codes, documented in `--help`.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const REFUSED: u8 = 3;
    pub const NOT_SWITCHED: u8 = 4;
    pub const BUSY: u8 = 5;
}

pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<verify::Refused>().is_some()
        || e.downcast_ref::<capsule::minisig::MinisignError>()
            .is_some()
    {
        exit::REFUSED
    } else if e.downcast_ref::<ops::DeployFailed>().is_some() {
        exit::NOT_SWITCHED
    } else if e.downcast_ref::<lock::LockBusy>().is_some() {
        exit::BUSY
    } else {
        exit::FAILED
    }
}

/// Test hook: with `DICKBOX_DEPLOY_TEST_CRASH_AT=<point>` the process kills
/// itself with SIGKILL at that point, so crash tests can stop a deploy
/// between any two steps and then run `recover`. Unset in production.
pub fn crash_point(name: &str) {
    if std::env::var("DICKBOX_DEPLOY_TEST_CRASH_AT").is_ok_and(|v| v == name) {
        eprintln!("dickbox-deploy: test crash at {name}");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}
