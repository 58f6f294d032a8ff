//! What can go wrong in a command, and the exit code each failure gives a script.

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The engine answered with a 4xx: the request was refused, and the answer says why.
    #[error("{message} (HTTP {status})")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The engine's message.
        message: String,
    },
    /// The admin API could not be reached, or failed (5xx, an answer that is not JSON).
    #[error("{0}")]
    Unreachable(String),
    /// A local input is wrong (a file that cannot be read, a payload that is not JSON).
    #[error("{0}")]
    Input(String),
    /// The condition asked about does not hold (not drained; config invalid): exit 1.
    #[error("{0}")]
    No(String),
}

impl CliError {
    /// The process's exit code for this failure (see the top-level help).
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::No(_) => 1,
            CliError::Input(_) => 2,
            CliError::Refused { .. } => 3,
            CliError::Unreachable(_) => 4,
        }
    }
}
