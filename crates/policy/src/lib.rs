//! The safehouse policy: one declarative document that says everything a sandbox may do.
//!
//! This crate is pure: it parses and validates policies and compiles them into plans
//! (mounts, seccomp, Landlock, limits) without touching the operating system, so every
//! decision can be tested with golden values.

#![forbid(unsafe_code)]

pub mod error;
pub mod explain;
pub mod landlock;
pub mod model;
pub mod network;
pub mod plan;
pub mod presets;
pub mod seccomp;
pub mod tools;
pub mod units;

pub use error::PolicyError;
pub use model::{Bind, Filesystem, Limits, Network, Policy, Rootfs};
