//! `zmq-key-rotate`: CURVE key rotation for the Dickbox message bus.
//!
//! Modules by job: [`z85`] and [`cert`] read and write keys and zcert files,
//! [`store`] owns the key store layout, [`rotate`] makes, announces and prunes
//! generations, [`events`] signs the announcements, [`bus`] is the forwarder
//! that follows rotations, [`config`] resolves settings, [`metrics`] and
//! [`logging`] report. `main.rs` only parses arguments and maps the result of
//! [`run`] to an exit code.
//!
//! Known limits: see "Limitations" in docs/zmq-key-rotate.md.

pub mod atomic;
pub mod bus;
pub mod cert;
pub mod cli;
pub mod config;
pub mod events;
pub mod logging;
pub mod metrics;
pub mod rotate;
pub mod store;
pub mod z85;

pub use cli::{Cli, Exit, run};
