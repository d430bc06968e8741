//! safehouse environments: OCI images as the root filesystem of sandboxes.
//!
//! - [`store`]: the content-addressed store in the data dir (blobs, unpacked layers,
//!   names, leases, garbage collection);
//! - [`unpack`]: layer archives into directories, safely (the hostile-layer rules);
//! - [`pull`]: any OCI / Docker v2 registry; [`import`]: OCI layouts, `docker save`
//!   archives, root filesystems;
//! - [`oci`]: manifests, indexes and configs; [`config`]: what a sandbox takes from an
//!   image's config.

#![forbid(unsafe_code)]

pub mod build;
pub mod compress;
pub mod config;
pub mod digest;
pub mod error;
pub mod import;
pub mod oci;
pub mod progress;
pub mod pull;
pub mod root;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use error::ImageError;
pub use store::{ImageRecord, Kind, Store};
