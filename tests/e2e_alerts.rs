//! Alert-driven remediation end to end on the local backend (memory), with a
//! real Alertmanager; `e2e_aws.rs` runs the same scenarios on the AWS backend.

async fn start(s: keelson_tests::Setup) -> keelson_tests::TestNode {
    keelson_tests::TestNode::start_with(s).await.unwrap()
}

include!("scenarios/alerts.rs");
