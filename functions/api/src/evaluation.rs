//! `POST /api/controlPlane/v1/project/{p}/stage/{s}/service/{svc}/evaluation`:
//! starts an `evaluation` sequence in a stage for a time window (Keptn's
//! `keptn trigger evaluation`).

use crate::error::{parse_body, ApiError};
use crate::projects::{check_stage, load};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::Path;
use axum::Json;
use keelson_core::event::{sequence_type, KeptnEvent, DEFAULT_API_SOURCE};
use keelson_core::ids;
use keelson_core::lighthouse::resolve_window;
use keelson_core::ports::{Clock, EventBus, Store};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

#[derive(Deserialize, Default)]
struct EvaluationBody {
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    timeframe: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    gitcommitid: Option<String>,
}

/// `POST …/evaluation`: answers `{"keptnContext": …}`.
pub async fn trigger<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path((project, stage, service)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: EvaluationBody = if body.iter().all(u8::is_ascii_whitespace) {
        EvaluationBody::default()
    } else {
        parse_body(&body)?
    };
    // Keptn answers an unknown project, stage or service with 400 here.
    let p = load(state.store(), &project)
        .await
        .map_err(not_found_is_bad_request)?
        .value;
    check_stage(&p, &stage).map_err(not_found_is_bad_request)?;
    if p.service(&service).is_none() {
        return Err(ApiError::bad_request(format!(
            "service {service} not found in project {project}"
        )));
    }
    let now = state.orch.clock().now();
    let (start, end) = resolve_window(
        body.start.as_deref(),
        body.end.as_deref(),
        body.timeframe.as_deref(),
        now,
    )?;
    let mut data = Map::new();
    data.insert("project".into(), json!(project));
    data.insert("stage".into(), json!(stage));
    data.insert("service".into(), json!(service));
    if let Some(l) = body.labels.filter(|l| !l.is_empty()) {
        data.insert("labels".into(), json!(l));
    }
    data.insert(
        "evaluation".into(),
        json!({"start": start.to_rfc3339(), "end": end.to_rfc3339()}),
    );
    let ctx = ids::random();
    let mut ev = KeptnEvent::new(
        ids::random(),
        DEFAULT_API_SOURCE,
        sequence_type(&stage, "evaluation", "triggered"),
        &ctx,
        Value::Object(data),
        now,
    );
    ev.gitcommitid = body.gitcommitid.filter(|c| !c.trim().is_empty());
    state.orch.bus().publish(std::slice::from_ref(&ev)).await?;
    Ok(Json(json!({"keptnContext": ctx})))
}

fn not_found_is_bad_request(e: ApiError) -> ApiError {
    if e.status == axum::http::StatusCode::NOT_FOUND {
        ApiError::bad_request(e.message)
    } else {
        e
    }
}
