//! The `api` Lambda: Keptn's REST API behind an API Gateway HTTP API.

use keelson_api::{router, Api, Token};
use keelson_lambda::{init_tracing, Env};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_tracing();
    // Built once per cold start, reused by every invocation.
    let env = Env::from_env().await?;
    let orch = env.orchestrator(keelson_shipyard::config_from_env()?);
    // The token is read from SSM on the first request, not during the cold start.
    let token = Token::lazy(move || {
        let env = env.clone();
        async move { env.token_from_env().await }
    });
    lambda_http::run(router(Arc::new(Api { orch, token }))).await
}
