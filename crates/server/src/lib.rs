//! The safehouse daemon: HTTP API, sandbox manager, state store.

#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod auth;
pub mod daemon;
pub mod e2b;
pub mod events;
pub mod files;
pub mod manager;
pub mod mcp;
pub mod openapi;
pub mod server;
pub mod store;

pub use server::{serve, ServeOptions};
pub use store::Store;

#[cfg(test)]
mod testutil;
