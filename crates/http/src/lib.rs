//! What every HTTP front of the daemon (the native API, MCP, the E2B front) shares, so the
//! fronts need nothing of each other: the one error shape ([`ApiError`]), request
//! extractors with their limits ([`json`], [`params`]), the Host/Origin and key guard
//! ([`guard`], [`hosts`]), the HTTP/1 connection driver with its connection permits
//! ([`server`]), the layers that audit and count every request ([`audit`], [`metrics`]),
//! file-operation glue ([`files`]) and the port proxy ([`ports`]), which the native API and
//! the E2B data plane both serve.

#![forbid(unsafe_code)]

pub mod audit;
pub mod code;
pub mod errors;
pub mod files;
pub mod guard;
pub mod hosts;
pub mod json;
pub mod metrics;
pub mod params;
pub mod ports;
pub mod revoked;
pub mod server;
pub mod tls;

use std::sync::Arc;

pub use errors::ApiError;
pub use hosts::HostAllowlist;

use safehouse_manager::auth::Authenticator;
use safehouse_manager::Manager;

/// What every front's handlers reach: the manager, the key check, the Host allowlist and
/// the port proxy. A front with state of its own wraps this one.
#[derive(Clone)]
pub struct AppState {
    pub manager: Manager,
    pub auth: Authenticator,
    pub hosts: Arc<HostAllowlist>,
    pub ports: Arc<ports::PortProxy>,
}
