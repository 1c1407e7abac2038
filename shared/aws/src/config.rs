//! The SDK configuration every client is built from, once per cold start.

pub use aws_config::SdkConfig;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// Where the AWS APIs are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// An emulator's endpoint (`http://127.0.0.1:4566`); `None` is real AWS.
    pub endpoint: Option<String>,
    /// Region; `None` takes the environment's (`AWS_REGION`, profile).
    pub region: Option<String>,
}

impl Settings {
    /// From `AWS_ENDPOINT_URL` and `AWS_REGION` (what the SDK itself reads).
    pub fn from_env() -> Self {
        Settings {
            endpoint: std::env::var("AWS_ENDPOINT_URL")
                .ok()
                .filter(|s| !s.is_empty()),
            region: std::env::var("AWS_REGION").ok().filter(|s| !s.is_empty()),
        }
    }

    /// The emulator on `endpoint` with the credentials it accepts.
    pub fn emulator(endpoint: &str) -> Self {
        Settings {
            endpoint: Some(endpoint.into()),
            region: Some("us-east-1".into()),
        }
    }
}

/// Loads the SDK configuration: the default credential chain (environment,
/// profile, container and instance roles), rustls with ring for TLS. Against an
/// emulator without credentials in the environment, test credentials are used.
pub async fn load(s: &Settings) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(r) = &s.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(e) = &s.endpoint {
        loader = loader.endpoint_url(e);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "emulator",
            ));
        }
    }
    loader.load().await
}
