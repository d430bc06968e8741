//! Policy errors: each names what is wrong and, where it can, what to write instead.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PolicyError {
    /// The document is not valid TOML or does not match the schema. The message carries the
    /// line, the column and the offending key.
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },

    /// The document parses but says something impossible or contradictory.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },

    /// No built-in policy has that name.
    #[error("unknown preset {name:?}; available presets: {available}")]
    UnknownPreset { name: String, available: String },
}

impl PolicyError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError::Invalid { field: field.into(), message: message.into() }
    }
}
