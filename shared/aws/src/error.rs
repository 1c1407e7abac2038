//! SDK errors mapped to the core's kinds, keeping the SDK error as the source.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
pub use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use keelson_core::ports::StoreError;
use keelson_core::ErrorKind;

/// Error codes that pass on retry.
const TRANSIENT_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "TransactionInProgressException",
    "TransactionConflictException",
    "RequestThrottled",
];

/// Cancellation reasons of a `TransactWriteItems` (the `Code` of each
/// `CancellationReason`) that pass on retry: throttling and a conflict with
/// another transaction on one of the items.
pub const TRANSIENT_CANCELLATION_REASONS: &[&str] = &[
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
    "TransactionConflict",
    "RequestLimitExceeded",
];

/// Classifies an SDK error: throttling, timeouts, 5xx and I/O are transient;
/// the rest (validation, access, missing resources) is fatal: a broken
/// installation, not bad input.
pub fn kind_of<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> ErrorKind {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ErrorKind::Transient
        }
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or_default();
            if TRANSIENT_CODES.contains(&code) || s.raw().status().is_server_error() {
                ErrorKind::Transient
            } else {
                ErrorKind::Fatal
            }
        }
        _ => ErrorKind::Fatal,
    }
}

/// Whether a failed write may nevertheless have been applied: no answer
/// (timeout, dispatch or response failure), a 5xx, or a retried transaction
/// still in progress. A 4xx answer (validation, condition, throttling,
/// cancellation) means the write was not applied.
pub fn maybe_applied<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        SdkError::ServiceError(s) => {
            s.raw().status().is_server_error()
                || s.err().code() == Some("TransactionInProgressException")
        }
        SdkError::ConstructionFailure(_) => false,
        _ => true,
    }
}

/// Whether the error is DynamoDB's `TransactionConflictException`: a
/// single-item write met an item that a transaction is writing.
pub fn is_transaction_conflict<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    code_of(e) == Some("TransactionConflictException")
}

/// The service's error code, if the service answered with one.
pub fn code_of<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> Option<&str> {
    match e {
        SdkError::ServiceError(s) => s.err().code(),
        _ => None,
    }
}

/// Wraps an SDK error as a [`StoreError::Backend`], transient or not.
pub fn store_error<E>(e: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let transient = kind_of(&e) == ErrorKind::Transient;
    StoreError::backend(e, transient)
}

/// A configuration or protocol error of Keelson's own (not the SDK's).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AwsError(pub String);

/// A fatal backend error with a message.
pub fn fatal(msg: impl Into<String>) -> StoreError {
    StoreError::backend(AwsError(msg.into()), false)
}
