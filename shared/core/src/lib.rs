//! `keelson-core`: the pure domain of Keelson.
//!
//! Everything Keptn-specific lives here and is unit-tested without any runtime:
//! CloudEvents ([`event`]), shipyard files ([`shipyard`]), the payload merge
//! ([`merge`]), sequence orchestration ([`sequence`]), datastore queries
//! ([`query`]), resources ([`resource`]), projects ([`project`]) and the ports
//! ([`ports`]) that adapters implement. No I/O happens in this crate.

pub mod alerts;
pub mod approval;
pub mod error;
pub mod event;
pub mod ids;
pub mod lighthouse;
pub mod merge;
pub mod ports;
pub mod project;
pub mod query;
pub mod remediation;
pub mod resource;
pub mod sequence;
pub mod shipyard;
pub mod slo;
pub mod timestamp;
pub mod view;

pub use error::{CoreError, ErrorKind};
pub use event::KeptnEvent;
pub use timestamp::Timestamp;

#[cfg(test)]
mod fixtures_tests;
#[cfg(test)]
mod prop_tests;
