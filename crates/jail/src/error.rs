//! Errors of the isolation engine.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum JailError {
    /// A layer the policy requires cannot be enforced on this host: the sandbox is refused.
    #[error("cannot enforce {layer} here: {reason}")]
    LayerUnavailable { layer: String, reason: String },

    /// The policy or request is invalid.
    #[error(transparent)]
    Policy(#[from] safehouse_policy::PolicyError),

    /// A host-side step of sandbox creation failed.
    #[error("{step}: {source}")]
    Host { step: String, source: std::io::Error },

    /// A step inside the new sandbox failed before the command ran.
    #[error("sandbox setup failed: {0}")]
    Setup(String),

    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
}

impl JailError {
    pub fn host(step: impl Into<String>, source: std::io::Error) -> Self {
        JailError::Host { step: step.into(), source }
    }
}
