//! The code interpreter's two halves that do not depend on the daemon.
//!
//! - [`driver`]: the in-sandbox driver (`driver/driver.py`, embedded in the binary). The
//!   daemon starts it as an ordinary sandboxed process (`python3 -I -u -c BOOT`) and sends
//!   its source on stdin first, so the driver always matches the daemon's version and no
//!   image needs to carry it. It manages the sandbox's kernels: Python contexts are
//!   Jupyter kernels (ipykernel), bash contexts a long-lived bash each.
//! - [`protocol`] and [`session`]: the host side of the JSON-lines protocol. Everything
//!   the driver says is untrusted (the code it runs shares its uid and can write to its
//!   stdout): lines are capped, events are checked against the known shapes, and an event
//!   can only reach the request whose id it names.

#![forbid(unsafe_code)]

pub mod driver;
pub mod lines;
pub mod protocol;
pub mod session;

pub use protocol::{ContextInfo, Event, Request};
pub use session::{Session, SessionError};
