//! End-to-end delivery scenarios over HTTP, with the tests playing the
//! execution plane through the polling endpoint, as a remote integration would.
//! Local backend (memory); `e2e_aws.rs` runs the same scenarios on the AWS backend.

use keelson_tests::{types, wait_for, Setup, TestNode};
use serde_json::json;
use std::time::Duration;

async fn start(s: Setup) -> TestNode {
    TestNode::start_with(s).await.unwrap()
}

include!("scenarios/delivery.rs");
