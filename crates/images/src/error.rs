//! Errors of the image store: each names the step, the object and, where there is one,
//! what to do about it.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ImageError {
    /// A file operation on the store (or an import source) failed.
    #[error("{step} {}: {cause}", path.display())]
    Io { step: &'static str, path: PathBuf, cause: std::io::Error },

    /// Content does not hash to the digest it was announced with.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}; the source is corrupt or was tampered with, nothing of it was kept")]
    Digest { what: String, expected: String, actual: String },

    /// A layer the store refuses to unpack (path escapes, bombs, malformed archives).
    #[error("layer {layer} refused: {reason}")]
    Layer { layer: String, reason: String },

    /// A name or reference that cannot be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },

    /// No image of that name in the store.
    #[error("no image named {0:?} in the store; `safehouse image ls` lists them, `safehouse image pull` or `image import` adds one")]
    NotFound(String),

    /// The registry refused, failed or answered nonsense.
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },

    /// A manifest, config, index or archive that is not what the OCI specs describe.
    #[error("{what}: {reason}")]
    Format { what: String, reason: String },

    /// Something the store cannot do for this image or on this host.
    #[error("{0}")]
    Unsupported(String),

    /// A template build failed: the step, its Dockerfile line, and its log.
    #[error("{0}")]
    Build(String),

    /// The store directory cannot be used by this process.
    #[error("image store {}: {reason}", path.display())]
    Store { path: PathBuf, reason: String },
}

impl ImageError {
    pub(crate) fn io(step: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io { step, path: path.into(), cause: source }
    }
    pub(crate) fn format(what: impl Into<String>, reason: impl Into<String>) -> Self {
        ImageError::Format { what: what.into(), reason: reason.into() }
    }
    pub(crate) fn layer(layer: impl Into<String>, reason: impl Into<String>) -> Self {
        ImageError::Layer { layer: layer.into(), reason: reason.into() }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
