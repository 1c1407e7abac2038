//! The `keelson` command's library: the local mode (every function in one
//! process over a durable in-process bus) and the HTTP client verbs.

pub mod approvals;
pub mod aws;
pub mod client;
pub mod evaluate;
pub mod executors;
pub mod node;
pub mod token;

pub use aws::AwsTarget;
pub use node::{FunctionSet, Node, NodeOptions, Observer, StoreChoice};
