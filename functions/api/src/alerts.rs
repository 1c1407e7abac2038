//! Alert ingestion (`POST /api/v1/alerts/alertmanager`, `POST
//! /api/v1/alerts/generic`) and maintenance windows (`/api/v1/maintenance`).
//!
//! Each firing alert instance starts one remediation sequence in its own
//! keptn context ([`alerts::alert_context`]); the ledger record written
//! before the trigger is published makes repeated and grouped notifications
//! start nothing more. A `resolved` notification aborts that remediation.
//! Alerts inside a maintenance window start nothing. Every notification
//! handled is recorded as a `sh.keptn.event.alert.received` event with what
//! was done, and answered per alert in the response.

use crate::error::ApiError;
use crate::params::Params;
use crate::projects::exists;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use keelson_core::alerts::{self, Alert, Mapping, Target, Window, LEDGER, MAINTENANCE_PREFIX};
use keelson_core::ports::{Clock, EventBus, ExecutionFilter, Store};
use keelson_core::resource::{Change, Scope};
use keelson_core::sequence::ControlAction;
use serde_json::{json, Value};

/// How long a resolution waits (answered 503) for the shipyard to take the
/// alert's remediation trigger before it concludes that nothing will start.
const PICKUP_GRACE_MS: i64 = 60_000;

/// `POST /api/v1/alerts/alertmanager`: Alertmanager's webhook (version 4).
pub async fn alertmanager<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    params: Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mapping = Mapping::from_params(|k| params.string(k))?;
    let alerts = alerts::parse_alertmanager(&body)?;
    handle(&state, &mapping, alerts).await
}

/// `POST /api/v1/alerts/generic`: the documented generic shape.
pub async fn generic<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    params: Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mapping = Mapping::from_params(|k| params.string(k))?;
    let alerts = alerts::parse_generic(&body)?;
    handle(&state, &mapping, alerts).await
}

async fn handle<S: Store, B: EventBus, C: Clock>(
    state: &AppState<S, B, C>,
    mapping: &Mapping,
    alerts: Vec<Alert>,
) -> Result<Json<Value>, ApiError> {
    let mut out = vec![];
    for a in alerts {
        let (target, outcome) = match mapping.target(&a) {
            Err(why) => (None, format!("ignored: {why}")),
            Ok(t) => {
                let outcome = match check_target(state, &t).await? {
                    Some(why) => format!("ignored: {why}"),
                    None if a.status == "firing" => firing(state, &a, &t).await?,
                    None => resolved(state, &a, &t).await?,
                };
                (Some(t), outcome)
            }
        };
        let now = state.orch.clock().now();
        state
            .orch
            .bus()
            .publish(&[alerts::received(&a, target.as_ref(), &outcome, now)])
            .await?;
        if outcome.starts_with("ignored") {
            tracing::warn!(fingerprint = %a.fingerprint, %outcome, "alert not mapped to a remediation");
        }
        out.push(json!({
            "fingerprint": a.fingerprint, "status": a.status,
            "keptnContext": alerts::alert_context(&a), "outcome": outcome,
        }));
    }
    Ok(Json(json!({"alerts": out})))
}

/// Why an alert's project / stage / service cannot take a remediation, if so.
async fn check_target<S: Store, B: EventBus, C: Clock>(
    state: &AppState<S, B, C>,
    t: &Target,
) -> Result<Option<String>, ApiError> {
    let Some(p) = state.orch.store().get_project(&t.project).await? else {
        return Ok(Some(format!("project {} not found", t.project)));
    };
    let p = p.value;
    if !p.stages.contains(&t.stage) {
        return Ok(Some(format!(
            "stage {} not found in project {}",
            t.stage, t.project
        )));
    }
    if p.service(&t.service).is_none() {
        return Ok(Some(format!(
            "service {} not found in project {}",
            t.service, t.project
        )));
    }
    Ok(None)
}

async fn firing<S: Store, B: EventBus, C: Clock>(
    state: &AppState<S, B, C>,
    a: &Alert,
    t: &Target,
) -> Result<String, ApiError> {
    let now = state.orch.clock().now();
    if let Some(w) = windows(state, &t.project)
        .await?
        .into_iter()
        .find(|w| w.silences(t, now))
    {
        return Ok(format!(
            "silenced by maintenance window {} (until {})",
            w.id,
            w.end.to_rfc3339()
        ));
    }
    let ctx = alerts::alert_context(a);
    let trigger = alerts::remediation_trigger(a, t, now);
    if let Some(why) = alerts::too_large(&trigger) {
        return Ok(format!("ignored: {why}"));
    }
    let store = state.orch.store();
    let key = format!("firing/{ctx}");
    if !store
        .record_applied(LEDGER, &key, std::slice::from_ref(&trigger), now)
        .await?
    {
        // Started before: by this notification's first delivery (which may
        // have stopped before publishing: publish again, consumers dedupe by
        // id) or by an earlier notification of the same alert.
        let earlier = store
            .applied_effects(LEDGER, &key)
            .await?
            .unwrap_or_default();
        state.orch.bus().publish(&earlier).await?;
        return Ok(format!("duplicate: remediation {ctx} was started before"));
    }
    state.orch.bus().publish(&[trigger]).await?;
    Ok(format!("remediation {ctx} started"))
}

async fn resolved<S: Store, B: EventBus, C: Clock>(
    state: &AppState<S, B, C>,
    a: &Alert,
    t: &Target,
) -> Result<String, ApiError> {
    let ctx = alerts::alert_context(a);
    let store = state.orch.store();
    let Some(started) = store
        .applied_effects(LEDGER, &format!("firing/{ctx}"))
        .await?
    else {
        return Ok("resolved: no remediation was started for it".into());
    };
    let executions = store
        .list_executions(&ExecutionFilter {
            project: t.project.clone(),
            keptn_context: Some(ctx.clone()),
            ..ExecutionFilter::default()
        })
        .await?;
    if executions.is_empty() {
        // The trigger is published but the shipyard has not taken it yet:
        // aborting now would abort nothing and let it start afterwards. The
        // sender retries a 503 (Alertmanager does). A trigger the shipyard
        // never takes (no remediation sequence in that stage) stops this
        // after a minute.
        let sent = started.first().map_or(0, |e| e.time.millis());
        if state.orch.clock().now().millis() - sent < PICKUP_GRACE_MS {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the remediation {ctx} of this alert has not started yet; send the resolution again"),
            ));
        }
        return Ok(format!(
            "resolved: remediation {ctx} never started (no remediation sequence in stage {}?)",
            t.stage
        ));
    }
    // Aborting an ended or already aborted context does nothing, so a
    // repeated resolved notification is harmless.
    state
        .orch
        .control(&t.project, &ctx, ControlAction::Abort, Some(&t.stage))
        .await?;
    Ok(format!("resolved: remediation {ctx} aborted"))
}

/// The project's maintenance windows (unreadable ones are skipped and logged).
async fn windows<S: Store, B: EventBus, C: Clock>(
    state: &AppState<S, B, C>,
    project: &str,
) -> Result<Vec<Window>, ApiError> {
    let store = state.orch.store();
    let mut out = vec![];
    for (uri, _) in store
        .list_resources(project, &Scope::project(), None)
        .await?
    {
        if !uri.starts_with(MAINTENANCE_PREFIX) {
            continue;
        }
        let Some(r) = store
            .read_resource(project, &Scope::project(), &uri, None)
            .await?
        else {
            continue;
        };
        match serde_json::from_slice::<Window>(&r.content) {
            Ok(w) => out.push(w),
            Err(e) => tracing::warn!(%uri, error = %e, "unreadable maintenance window skipped"),
        }
    }
    out.sort_by_key(|w| w.start);
    Ok(out)
}

/// `POST /api/v1/maintenance`: creates a window; answers it (201).
pub async fn create_window<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: Value = crate::error::parse_body(&body)?;
    let w = alerts::new_window(&body, state.orch.clock().now())?;
    let p = exists(&state, &w.project).await?;
    if let Some(s) = &w.stage {
        if !p.stages.iter().any(|x| x == s) {
            return Err(ApiError::bad_request(format!(
                "stage: {s} not found in project {}",
                w.project
            )));
        }
    }
    if let Some(s) = &w.service {
        if p.service(s).is_none() {
            return Err(ApiError::bad_request(format!(
                "service: {s} not found in project {}",
                w.project
            )));
        }
    }
    let content =
        serde_json::to_vec_pretty(&w).map_err(|e| ApiError::bad_request(e.to_string()))?;
    state
        .orch
        .store()
        .write_resources(
            &w.project,
            &Scope::project(),
            &[Change {
                uri: w.uri(),
                content: Some(content),
            }],
            state.orch.clock().now(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(json!(w))))
}

/// `GET /api/v1/maintenance?project=p[&active=true]`: the project's windows, by start.
pub async fn list_windows<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let project = params
        .string("project")
        .ok_or_else(|| ApiError::bad_request("project: is required"))?;
    exists(&state, &project).await?;
    let now = state.orch.clock().now();
    let ws: Vec<Window> = windows(&state, &project)
        .await?
        .into_iter()
        .filter(|w| w.end.millis() > now.millis())
        .collect();
    Ok(Json(json!({"windows": ws})))
}

/// `DELETE /api/v1/maintenance/{project}/{id}`: ends a window.
pub async fn delete_window<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path((project, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    exists(&state, &project).await?;
    let uri = format!("{MAINTENANCE_PREFIX}{id}.json");
    let store = state.orch.store();
    if store
        .read_resource(&project, &Scope::project(), &uri, None)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!(
            "maintenance window {id} not found in project {project}"
        )));
    }
    store
        .write_resources(
            &project,
            &Scope::project(),
            &[Change { uri, content: None }],
            state.orch.clock().now(),
        )
        .await?;
    Ok(Json(
        json!({"message": format!("maintenance window {id} deleted")}),
    ))
}
