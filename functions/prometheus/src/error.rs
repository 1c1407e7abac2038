//! Errors of the Prometheus SLI provider.

use keelson_core::ports::StoreError;
use keelson_core::ErrorKind;
use thiserror::Error;

/// What can keep the provider from answering a trigger. Everything about the
/// answer itself (missing or broken files, Prometheus down, bad queries) is
/// reported in the `get-sli.finished` event instead.
#[derive(Debug, Error)]
pub enum Error {
    /// Reading configuration from the store or publishing to the bus failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// The kind shells map from.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store(e) => e.kind(),
        }
    }
}

/// Bad settings, every one named.
#[derive(Debug, Error, PartialEq)]
#[error("invalid Prometheus provider settings: {}", .problems.join("; "))]
pub struct ConfigError {
    /// One entry per bad variable, naming it.
    pub problems: Vec<String>,
}
