//! The safehouse isolation engine: turns a plan into a running sandbox and tears it down.
//!
//! Host side: [`run`] (checks, cgroup, clone, id maps, supervision). Sandbox side:
//! [`setup`] (the ordered setup steps), [`mounts`] (the filesystem view) and [`init`]
//! (PID 1 of the sandbox).

#![forbid(unsafe_code)]

pub mod cgroup;
pub mod command;
pub mod error;
pub mod execwatch;
pub mod host;
pub mod init;
pub mod kernel;
pub mod mounts;
pub mod report;
pub mod run;
pub mod seccomp_program;
pub mod setup;
pub mod spawn;
pub mod testkit;
pub mod toollimit;
pub mod tools;
pub mod zygote;

pub use error::JailError;
pub use run::{run, EgressGateway, Outcome, RunSpec};
