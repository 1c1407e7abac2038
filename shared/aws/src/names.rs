//! Names of a deployment's resources, shared by the SAM template (as
//! `!Sub "${AWS::StackName}-…"`), the provisioning and the functions' settings.

/// The functions fed from a queue, in the template's order.
pub const QUEUE_FUNCTIONS: &[&str] = &[
    "shipyard",
    "datastore",
    "lighthouse",
    "approval",
    "remediation",
    "prometheus",
];

/// Environment variable: the DynamoDB table.
pub const ENV_TABLE: &str = "KEELSON_TABLE";
/// Environment variable: the EventBridge bus.
pub const ENV_BUS: &str = "KEELSON_BUS";
/// Environment variable: the URL of the function's dead-letter queue.
pub const ENV_DLQ_URL: &str = "KEELSON_DLQ_URL";
/// Environment variable: the SSM SecureString parameter holding the API token.
pub const ENV_TOKEN_PARAMETER: &str = "KEELSON_TOKEN_PARAMETER";

/// A deployment's resource names, all derived from its stack name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The stack name.
    pub stack: String,
}

impl Names {
    /// Names of the stack `stack`.
    pub fn new(stack: &str) -> Self {
        Names {
            stack: stack.into(),
        }
    }
    /// The table.
    pub fn table(&self) -> String {
        format!("{}-state", self.stack)
    }
    /// The custom event bus.
    pub fn bus(&self) -> String {
        format!("{}-bus", self.stack)
    }
    /// A function's queue.
    pub fn queue(&self, function: &str) -> String {
        format!("{}-{function}", self.stack)
    }
    /// A function's dead-letter queue.
    pub fn dlq(&self, function: &str) -> String {
        format!("{}-{function}-dlq", self.stack)
    }
    /// A function's rule on the bus.
    pub fn rule(&self, function: &str) -> String {
        format!("{}-{function}", self.stack)
    }
    /// The SSM parameter with the API token.
    pub fn token_parameter(&self) -> String {
        format!("/{}/api-token", self.stack)
    }
}
