//! `keelson-aws`: the AWS adapters of Keelson's ports.
//!
//! - [`dynamo`]: the single-table DynamoDB store (all of [`keelson_core::ports::Store`]).
//! - [`eventbridge`]: the EventBridge bus (CloudEvent as `detail`, type as `detail-type`).
//! - [`sqs`]: the SQS shell (a Lambda batch handler with partial batch failures)
//!   and a poller that feeds it from a queue like Lambda's event source mapping.
//! - [`provision`]: creates the SAM template's resources on an emulator.
//!
//! Errors keep their SDK sources and map to the core's
//! `Invalid | Conflict | Transient | Fatal` ([`error`]).

pub mod clients;
pub mod config;
pub mod error;
pub mod names;

#[cfg(feature = "dynamodb")]
pub mod dynamo;
#[cfg(feature = "provision")]
pub mod emulator;
#[cfg(feature = "eventbridge")]
pub mod eventbridge;
#[cfg(feature = "provision")]
pub mod provision;
#[cfg(feature = "sqs")]
pub mod sqs;
#[cfg(feature = "ssm")]
pub mod token;

pub use config::{load, Settings};
