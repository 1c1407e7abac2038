//! The `api` function: Keptn's public REST API under `/api`, so the Keptn CLI
//! and existing integrations work when pointed at `http://host:port/api`.
//! Every error is `{"code": …, "message": …}`.

mod alerts;
mod datastore;
mod error;
mod evaluation;
mod events;
mod params;
mod projects;
mod resources;
mod sequences;
mod uniform;

pub use error::ApiError;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use keelson_core::ports::{Clock, EventBus, Store};
use keelson_shipyard::Orchestrator;
use serde_json::json;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Header carrying the API token.
pub const TOKEN_HEADER: &str = "x-token";
/// The Keptn version whose API Keelson speaks.
pub const KEPTN_VERSION: &str = "1.4.5";
/// Requests larger than this are refused (resource uploads are the largest).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The OpenAPI 3 document of what Keelson implements.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Shared state of the handlers.
pub struct Api<S, B, C> {
    /// The orchestrator (store, bus, clock).
    pub orch: Arc<Orchestrator<S, B, C>>,
    /// The API token.
    pub token: Token,
}

type TokenLoader = Box<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>
        + Send
        + Sync,
>;

/// The API token: known at start, or loaded on first use (the Lambda reads it
/// from SSM on its first request, so the read is not part of its cold start).
pub enum Token {
    /// Known.
    Fixed(String),
    /// Loaded once by the loader; a failed load is tried again on the next request.
    Lazy(tokio::sync::OnceCell<String>, TokenLoader),
}

impl Token {
    /// A token loaded on first use.
    pub fn lazy<F, Fut>(load: F) -> Token
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<String, String>> + Send + 'static,
    {
        Token::Lazy(
            tokio::sync::OnceCell::new(),
            Box::new(move || Box::pin(load())),
        )
    }

    async fn get(&self) -> Result<&str, String> {
        match self {
            Token::Fixed(t) => Ok(t),
            Token::Lazy(cell, load) => cell.get_or_try_init(load).await.map(String::as_str),
        }
    }
}

impl From<String> for Token {
    fn from(t: String) -> Token {
        Token::Fixed(t)
    }
}

impl<S: Store, B: EventBus, C: Clock> Api<S, B, C> {
    fn store(&self) -> &S {
        self.orch.store()
    }
}

type AppState<S, B, C> = State<Arc<Api<S, B, C>>>;

/// The router with every route, auth and body limits.
pub fn router<S: Store, B: EventBus, C: Clock>(api: Arc<Api<S, B, C>>) -> Router {
    let cp = "/api/controlPlane/v1";
    let rs = "/api/resource-service/v1/project/{project}";
    let protected = Router::new()
        .route("/api/v1/auth", post(auth))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/openapi.json", get(openapi))
        .route("/api/v1/event", post(events::post_event::<S, B, C>))
        .route(
            "/api/v1/alerts/alertmanager",
            post(alerts::alertmanager::<S, B, C>),
        )
        .route("/api/v1/alerts/generic", post(alerts::generic::<S, B, C>))
        .route(
            "/api/v1/maintenance",
            post(alerts::create_window::<S, B, C>).get(alerts::list_windows::<S, B, C>),
        )
        .route(
            "/api/v1/maintenance/{project}/{id}",
            axum::routing::delete(alerts::delete_window::<S, B, C>),
        )
        .route(
            &format!("{cp}/project"),
            get(projects::list::<S, B, C>)
                .post(projects::create::<S, B, C>)
                .put(projects::update::<S, B, C>),
        )
        .route(
            &format!("{cp}/project/{{project}}"),
            get(projects::get_one::<S, B, C>).delete(projects::delete::<S, B, C>),
        )
        .route(
            &format!("{cp}/project/{{project}}/stage"),
            get(projects::stages::<S, B, C>),
        )
        .route(
            &format!("{cp}/project/{{project}}/stage/{{stage}}"),
            get(projects::stage::<S, B, C>),
        )
        .route(
            &format!("{cp}/project/{{project}}/stage/{{stage}}/service"),
            get(projects::services::<S, B, C>),
        )
        .route(
            &format!("{cp}/project/{{project}}/stage/{{stage}}/service/{{service}}"),
            get(projects::service::<S, B, C>),
        )
        .route(
            &format!("{cp}/project/{{project}}/stage/{{stage}}/service/{{service}}/evaluation"),
            post(evaluation::trigger::<S, B, C>),
        )
        .route(
            &format!("{cp}/project/{{project}}/service"),
            post(projects::create_service::<S, B, C>),
        )
        .route(
            &format!("{cp}/project/{{project}}/service/{{service}}"),
            axum::routing::delete(projects::delete_service::<S, B, C>),
        )
        .route(
            &format!("{cp}/sequence/{{project}}"),
            get(sequences::list::<S, B, C>),
        )
        .route(
            &format!("{cp}/sequence/{{project}}/{{context}}/control"),
            post(sequences::control::<S, B, C>),
        )
        .route(
            &format!("{cp}/event/triggered/{{event_type}}"),
            get(sequences::open_triggered::<S, B, C>),
        )
        .route(
            &format!("{cp}/uniform/registration"),
            get(uniform::list::<S, B, C>).post(uniform::register::<S, B, C>),
        )
        .route(
            &format!("{cp}/uniform/registration/{{id}}"),
            axum::routing::delete(uniform::delete::<S, B, C>),
        )
        .route(
            &format!("{cp}/uniform/registration/{{id}}/ping"),
            put(uniform::ping::<S, B, C>),
        )
        .route(
            "/api/mongodb-datastore/event",
            get(datastore::events::<S, B, C>),
        )
        .route(
            "/api/mongodb-datastore/event/type/{event_type}",
            get(datastore::by_type::<S, B, C>),
        )
        .route(
            &format!("{rs}/resource"),
            resources::collection::<S, B, C>(),
        )
        .route(
            &format!("{rs}/resource/{{*uri}}"),
            resources::item::<S, B, C>(),
        )
        .route(
            &format!("{rs}/stage/{{stage}}/resource"),
            resources::collection::<S, B, C>(),
        )
        .route(
            &format!("{rs}/stage/{{stage}}/resource/{{*uri}}"),
            resources::item::<S, B, C>(),
        )
        .route(
            &format!("{rs}/stage/{{stage}}/service/{{service}}/resource"),
            resources::collection::<S, B, C>(),
        )
        .route(
            &format!("{rs}/stage/{{stage}}/service/{{service}}/resource/{{*uri}}"),
            resources::item::<S, B, C>(),
        )
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            require_token::<S, B, C>,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/api/health", get(health))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::map_response(json_errors))
        .with_state(api)
}

async fn require_token<S, B, C>(
    State(api): AppState<S, B, C>,
    req: Request,
    next: Next,
) -> Response {
    let token = match api.token.get().await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "the API token could not be read");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the API token could not be read; try again",
            )
            .into_response();
        }
    };
    let ok = presented_token(req.headers())
        .map(|t| bool::from(t.ct_eq(token.as_bytes())))
        .unwrap_or(false);
    if ok {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated or invalid credentials",
        )
        .into_response()
    }
}

/// The token a request presents: the `x-token` header (Keptn's), else what
/// webhook senders such as Alertmanager's `http_config` can send —
/// `Authorization: Bearer <token>`, or Basic auth with the token as the
/// password (any user name).
fn presented_token(h: &axum::http::HeaderMap) -> Option<Vec<u8>> {
    if let Some(v) = h.get(TOKEN_HEADER) {
        return Some(v.as_bytes().to_vec());
    }
    let auth = h
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, rest) = auth.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "OK"}))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

/// Rejections produced by axum's extractors (an undecodable path, a body over
/// the limit) are plain text; every error leaves as `{"code", "message"}`.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    ApiError::new(status, message).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

async fn auth() -> Json<serde_json::Value> {
    Json(json!({}))
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

async fn metadata() -> Json<serde_json::Value> {
    Json(json!({
        "namespace": "keelson",
        "keptnlabel": "keptn",
        "keptnversion": KEPTN_VERSION,
        "keelsonversion": env!("CARGO_PKG_VERSION"),
        "shipyardversion": "0.2.0",
        "bridgeversion": "",
        "automaticprovisioning": false,
    }))
}
