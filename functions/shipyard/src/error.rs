//! Errors of the shipyard function.

use keelson_core::ports::StoreError;
use keelson_core::ErrorKind;
use thiserror::Error;

/// What can go wrong while orchestrating.
#[derive(Debug, Error)]
pub enum Error {
    /// The store or the bus failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writers kept conflicting on one lane.
    #[error("lane {0} kept changing concurrently; giving up for now")]
    TooManyConflicts(String),
}

impl Error {
    /// The kind shells map from.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store(e) => e.kind(),
            Error::TooManyConflicts(_) => ErrorKind::Transient,
        }
    }
}
