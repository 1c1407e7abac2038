//! `POST /api/v1/event`: the only ingress for events.

use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::Json;
use keelson_core::approval::{self, answer_ledger_key};
use keelson_core::event::{
    normalize_ingress, task_type, validate_for_api, KeptnEvent, MAX_EVENT_BYTES,
};
use keelson_core::ports::{Clock, EventBus, OpenTriggerFilter, Store};
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
    if ev.ty == task_type("approval", "finished") {
        claim_approval(&state, &ev).await?;
    }
    tracing::debug!(ce.id = %ev.id, ce.type = %ev.ty, shkeptncontext = %ev.shkeptncontext, "event accepted");
    state.orch.bus().publish(std::slice::from_ref(&ev)).await?;
    Ok(Json(json!({"keptnContext": ev.shkeptncontext})))
}

/// An `approval.finished` answers one open approval, once: its `triggeredid`
/// must name an `approval.triggered` the shipyard is waiting on, and the
/// answer is recorded in the applied ledger before it is published, so a
/// second answer — another person's, or the automatic one — is refused.
async fn claim_approval<S: Store, B: EventBus, C: Clock>(
    state: &AppState<S, B, C>,
    ev: &KeptnEvent,
) -> Result<(), ApiError> {
    let Some(tid) = ev.triggeredid.as_deref().filter(|t| !t.is_empty()) else {
        return Err(ApiError::bad_request(
            "triggeredid: an approval.finished must name the approval.triggered it answers",
        ));
    };
    match ev.data_str("result") {
        Some("pass" | "fail") => {}
        other => {
            return Err(ApiError::bad_request(format!(
                "data.result: an approval is answered with \"pass\" (approve) or \"fail\" (decline), not {}",
                other.map_or("nothing".to_string(), |r| format!("{r:?}"))
            )))
        }
    }
    let store = state.orch.store();
    let key = answer_ledger_key(tid);
    let open = store
        .open_triggers(&OpenTriggerFilter {
            ty: task_type("approval", "triggered"),
            event_id: Some(tid.to_string()),
            ..OpenTriggerFilter::default()
        })
        .await?;
    let still_open = open.iter().any(|t| t.shkeptncontext == ev.shkeptncontext);
    if let Some(earlier) = store.applied_effects(approval::CONSUMER, &key).await? {
        // An answer was recorded. While the approval is still open its
        // publish may have failed after the record (the caller got an
        // error and retried): send the recorded answer again; consumers
        // dedupe it by id.
        if still_open {
            state.orch.bus().publish(&earlier).await?;
        }
        return Err(answered_already(tid, &earlier));
    }
    let Some(trigger) = open.iter().find(|t| t.shkeptncontext == ev.shkeptncontext) else {
        return Err(ApiError::not_found(format!(
            "no open approval {tid} in keptn context {}",
            ev.shkeptncontext
        )));
    };
    // The shipyard finds the approval by the answer's project, stage and
    // service: an answer naming others would be recorded and never applied.
    for (field, want, got) in [
        ("project", trigger.project(), ev.project()),
        ("stage", trigger.stage(), ev.stage()),
        ("service", trigger.service(), ev.service()),
    ] {
        if want != got {
            return Err(ApiError::bad_request(format!(
                "data.{field}: approval {tid} is in {field} {}, not {}",
                want.unwrap_or("-"),
                got.unwrap_or("-")
            )));
        }
    }
    let now = state.orch.clock().now();
    if !store
        .record_applied(approval::CONSUMER, &key, std::slice::from_ref(ev), now)
        .await?
    {
        let earlier = store
            .applied_effects(approval::CONSUMER, &key)
            .await?
            .unwrap_or_default();
        return Err(answered_already(tid, &earlier));
    }
    Ok(())
}

fn answered_already(tid: &str, earlier: &[KeptnEvent]) -> ApiError {
    let how = earlier
        .first()
        .map(|e| {
            let verdict = match e.data_str("result") {
                Some("pass") => "approved",
                Some("fail") => "declined",
                _ => "answered",
            };
            format!(" ({verdict} by {} at {})", e.source, e.time.to_rfc3339())
        })
        .unwrap_or_default();
    ApiError::new(
        StatusCode::CONFLICT,
        format!("approval {tid} was answered already{how}"),
    )
}
