//! The API token from an SSM SecureString parameter, read once per cold start.

use crate::error::{fatal, store_error};
use aws_sdk_ssm::Client;
use keelson_core::ports::StoreResult;

/// Reads and decrypts the parameter `name`.
pub async fn read(client: &Client, name: &str) -> StoreResult<String> {
    let out = client
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(store_error)?;
    let value = out
        .parameter()
        .and_then(|p| p.value())
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| fatal(format!("SSM parameter {name} has no value")))?;
    Ok(value.trim().to_string())
}
