//! The config file's generations as the API shows them, and its answers to a check and a
//! restore.

use serde::{Deserialize, Serialize};

/// One applied generation of the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GenerationView {
    /// Its number: 1 for the first applied, one more for each after.
    pub generation: u64,
    /// Where it came from (a file's path, an API call).
    pub source: String,
    /// When it was applied (ms since the Unix epoch).
    pub applied_at_ms: u64,
    /// The file's text.
    pub text: String,
    /// What changed from the generation before, line by line (`-` removed, `+` added).
    pub diff: Vec<String>,
}

/// A config file that would apply (an invalid one is an error answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigCheckView {
    /// Always `true`: applying the file would work.
    pub valid: bool,
}

/// The generation a restore put in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoredView {
    /// The new generation in force (the restored one's text, applied again as the newest).
    pub generation: u64,
}
