//! `POST /api/v1/event`: the only ingress for events.

use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::Json;
use keelson_core::event::{normalize_ingress, validate_for_api, KeptnEvent, MAX_EVENT_BYTES};
use keelson_core::ports::{Clock, EventBus, Store};
use serde_json::{json, Value};

/// Validates, normalises and publishes one event; answers `{"keptnContext": …}`.
pub async fn post_event<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|e| ApiError::bad_request(format!("unreadable body: {e}")))?;
    if body.len() > MAX_EVENT_BYTES {
        return Err(ApiError::bad_request(format!(
            "event of {} bytes exceeds the maximum size of {MAX_EVENT_BYTES} bytes",
            body.len()
        )));
    }
    let mut ev = KeptnEvent::parse_untrusted(&body)?;
    validate_for_api(&ev)?;
    normalize_ingress(&mut ev, state.orch.clock().now());
    tracing::debug!(ce.id = %ev.id, ce.type = %ev.ty, shkeptncontext = %ev.shkeptncontext, "event accepted");
    state.orch.bus().publish(std::slice::from_ref(&ev)).await?;
    Ok(Json(json!({"keptnContext": ev.shkeptncontext})))
}
