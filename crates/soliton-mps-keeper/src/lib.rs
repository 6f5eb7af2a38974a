//! `soliton-mps-keeper`: keeps one GPU's CUDA MPS server and context warm and
//! reports the GPU's health to systemd (readiness, watchdog, exit codes), to
//! node_exporter (a textfile) and to the journal (a fixed message id).
//!
//! Modules by job: [`device_id`] (which device), [`config`], [`backend`] (the
//! GPU interface; [`real`] implements it), [`mps`] (pipe folder, active
//! threads), [`keeper`] (the loop), [`metrics`], [`exit`], [`cli`].
//!
//! Limits: one device per keeper process; the keeper does not start or stop
//! the MPS control daemon (its own unit does); the real CUDA path has not yet
//! run on a GPU (see `real`, LIMITATION(#5)).

pub mod backend;
pub mod cli;
pub mod config;
pub mod device_id;
pub mod exit;
pub mod keeper;
pub mod logging;
pub mod metrics;
pub mod mps;
pub mod real;
#[cfg(all(feature = "simulated-gpu", debug_assertions))]
pub mod simulated;
