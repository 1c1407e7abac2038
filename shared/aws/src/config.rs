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

fn https() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The SDK configuration inside Lambda, from the variables Lambda sets
/// (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`; `AWS_ENDPOINT_URL` if set). Unlike [`load`] it links
/// none of the credential chain (profiles, STS, SSO, instance metadata), which
/// a function never needs, and so keeps the bootstraps small.
pub fn from_lambda_env() -> Result<SdkConfig, String> {
    use aws_credential_types::provider::SharedCredentialsProvider;
    let var = |k: &str| {
        std::env::var(k)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("environment variable {k} is not set"))
    };
    let creds = aws_credential_types::Credentials::new(
        var("AWS_ACCESS_KEY_ID")?,
        var("AWS_SECRET_ACCESS_KEY")?,
        var("AWS_SESSION_TOKEN").ok(),
        None,
        "lambda-environment",
    );
    let sleep = aws_smithy_async::rt::sleep::default_async_sleep()
        .ok_or("no async sleep implementation (tokio)")?;
    let mut b = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(var("AWS_REGION")?))
        .credentials_provider(SharedCredentialsProvider::new(creds))
        .http_client(https())
        .sleep_impl(sleep)
        .time_source(aws_smithy_async::time::SystemTimeSource::new())
        .retry_config(aws_config::retry::RetryConfig::standard())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_millis(3100))
                .build(),
        );
    if let Ok(e) = var("AWS_ENDPOINT_URL") {
        b = b.endpoint_url(e);
    }
    Ok(b.build())
}

/// Loads the SDK configuration: the default credential chain (environment,
/// profile, container and instance roles), rustls with ring for TLS. Against an
/// emulator without credentials in the environment, test credentials are used.
pub async fn load(s: &Settings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https());
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
