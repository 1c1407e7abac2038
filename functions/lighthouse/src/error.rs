//! Errors of the lighthouse, classified once for every shell.

use keelson_core::ports::StoreError;
use keelson_core::ErrorKind;
use thiserror::Error;

/// What can go wrong while processing an event.
#[derive(Debug, Error)]
pub enum Error {
    /// The store or the bus failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event cannot be processed as sent.
    #[error("invalid event: {0}")]
    Invalid(String),
    /// A `get-sli.finished` arrived before the datastore stored its trigger.
    #[error("the evaluation.triggered answered by get-sli.finished {0} is not stored yet")]
    TriggerNotStoredYet(String),
}

impl Error {
    /// The kind shells map from.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store(e) => e.kind(),
            Error::Invalid(_) => ErrorKind::Invalid,
            Error::TriggerNotStoredYet(_) => ErrorKind::Transient,
        }
    }
}
