//! Clients, each built once from the shared SDK configuration.

use aws_config::SdkConfig;

/// DynamoDB.
#[cfg(feature = "dynamodb")]
pub fn dynamodb(c: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(c)
}

/// EventBridge.
#[cfg(feature = "eventbridge")]
pub fn eventbridge(c: &SdkConfig) -> aws_sdk_eventbridge::Client {
    aws_sdk_eventbridge::Client::new(c)
}

/// SQS.
#[cfg(feature = "sqs")]
pub fn sqs(c: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(c)
}

/// SSM.
#[cfg(feature = "ssm")]
pub fn ssm(c: &SdkConfig) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(c)
}
