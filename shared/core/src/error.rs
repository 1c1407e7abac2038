//! Errors of the core and the error kinds every shell maps once.

use thiserror::Error;

/// How a shell should treat an error: the one classification every trigger
/// (HTTP status, SQS partial batch failure, Lambda error type) is mapped from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input is wrong; retrying the same input cannot succeed.
    Invalid,
    /// A concurrent writer won; re-read and re-apply.
    Conflict,
    /// A dependency failed in a way that may pass on retry.
    Transient,
    /// A bug or a broken installation.
    Fatal,
}

/// Errors raised by the pure domain.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CoreError {
    /// Input that fails validation; `field` names what is wrong.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl CoreError {
    /// Builds an [`CoreError::Invalid`] naming the field and the reason.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CoreError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The kind a shell maps this error from.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CoreError::Invalid { .. } => ErrorKind::Invalid,
        }
    }
}
