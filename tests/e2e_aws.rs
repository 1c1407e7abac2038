//! The AWS backend end to end: `keelson serve --backend aws` in-process on
//! the emulator (DynamoDB, EventBridge rules into SQS queues with dead-letter
//! queues, each function fed by its poller), each test on a fresh stack
//! provisioned from infra/aws/template.yaml. The delivery scenarios are the
//! same as the local backend's; the at-least-once ones follow.

use keelson_tests::{types, wait_for, Setup, TestNode};
use serde_json::json;
use std::time::Duration;

async fn start(s: Setup) -> TestNode {
    TestNode::start_with(Setup { aws: true, ..s })
        .await
        .unwrap()
}

include!("scenarios/delivery.rs");
