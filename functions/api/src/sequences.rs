//! Sequence states, sequence control and the open-trigger polling endpoint.

use crate::error::{parse_body, ApiError};
use crate::params::{page_json, Params};
use crate::projects::exists;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::Path;
use axum::Json;
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{Clock, EventBus, ExecutionFilter, OpenTriggerFilter, Store};
use keelson_core::query::{FilterTerm, TypeQuery, MAX_PAGE_SIZE};
use keelson_core::sequence::ControlAction;
use keelson_core::sequence::SOURCE as SHIPYARD_SOURCE;
use keelson_core::view::sequence_states;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashSet;

/// `GET /sequence/{project}`: `name, state, fromTime, beforeTime, keptnContext, pageSize, nextPageKey`.
/// As in Keptn, `pageSize` absent or 0 returns everything, and the page keys are integers.
pub async fn list<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path(project): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    exists(&state, &project).await?;
    let execs = state
        .store()
        .list_executions(&ExecutionFilter {
            project: project.clone(),
            keptn_context: params.string("keptnContext"),
            ..Default::default()
        })
        .await?;
    let from = params.time("fromTime")?;
    let before = params.time("beforeTime")?;
    let states: Vec<_> = sequence_states(&execs)
        .into_iter()
        .filter(|s| params.get("name").is_none_or(|n| s.name == n))
        .filter(|s| params.get("state").is_none_or(|n| s.state == n))
        .filter(|s| from.is_none_or(|t| s.time > t))
        .filter(|s| before.is_none_or(|t| s.time < t))
        .collect();
    let size: usize = match params.get("pageSize") {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("pageSize: {v:?} is not a number")))?,
    };
    let offset: usize = match params.get("nextPageKey") {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("nextPageKey: {v:?} is not a page key")))?,
    };
    let total = states.len();
    let size_eff = if size == 0 { total.max(1) } else { size };
    let page: Vec<_> = states.into_iter().skip(offset).take(size_eff).collect();
    let next = if offset.saturating_add(size_eff) < total {
        offset.saturating_add(size_eff)
    } else {
        0
    };
    Ok(Json(
        json!({"states": page, "nextPageKey": next, "pageSize": size, "totalCount": total}),
    ))
}

#[derive(Deserialize)]
struct ControlBody {
    state: Option<String>,
    #[serde(default)]
    stage: Option<String>,
}

/// `POST /sequence/{project}/{context}/control` with `{"state": "pause|resume|abort", "stage"?}`.
pub async fn control<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path((project, context)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: ControlBody = parse_body(&body)?;
    let action = match body.state.as_deref() {
        Some("pause") => ControlAction::Pause,
        Some("resume") => ControlAction::Resume,
        Some("abort") => ControlAction::Abort,
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "state: {o:?} is not one of pause, resume, abort"
            )))
        }
        None => {
            return Err(ApiError::bad_request(
                "state: is required (pause, resume or abort)",
            ))
        }
    };
    exists(&state, &project).await?;
    let stage = body.stage.filter(|s| !s.is_empty());
    state
        .orch
        .control(&project, &context, action, stage.as_deref())
        .await?;
    Ok(Json(json!({})))
}

/// `GET /event/triggered/{eventType}`: open, due task triggers only.
pub async fn open_triggered<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path(event_type): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let (size, offset) = params.page("pageSize", 100)?;
    if let Some(p) = params.get("project") {
        exists(&state, p).await?;
    }
    let filter = OpenTriggerFilter {
        ty: event_type,
        project: params.string("project"),
        stage: params.string("stage"),
        service: params.string("service"),
        event_id: params.string("eventID"),
    };
    let mut events = state.store().open_triggers(&filter).await?;
    let known: HashSet<String> = events.iter().map(|e| e.id.clone()).collect();
    events.extend(
        other_open_triggers(state.store(), &filter)
            .await?
            .into_iter()
            .filter(|e| !known.contains(&e.id)),
    );
    events.sort_by_key(|e| e.time);
    let rest: Vec<Value> = events.iter().map(|e| e.to_rest_json()).collect();
    Ok(Json(page_json("events", &rest, size, offset)))
}

/// Task triggers that other functions sent (the lighthouse's `get-sli.triggered`,
/// for one), open until a `.finished` answers them: Keptn's controller kept
/// every task `.triggered` it saw for remote execution planes to poll, so a
/// remote SLI provider finds its requests here. Read from the datastore, at
/// most the newest [`MAX_PAGE_SIZE`] per project.
async fn other_open_triggers<S: Store>(
    store: &S,
    f: &OpenTriggerFilter,
) -> Result<Vec<KeptnEvent>, ApiError> {
    let Some(task) =
        f.ty.strip_prefix("sh.keptn.event.")
            .and_then(|t| t.strip_suffix(".triggered"))
            .filter(|t| !t.is_empty() && !t.contains('.'))
    else {
        return Ok(vec![]);
    };
    let projects = match &f.project {
        Some(p) => vec![p.clone()],
        None => store
            .list_projects()
            .await?
            .into_iter()
            .map(|p| p.name)
            .collect(),
    };
    let term = |k: &str, v: String| FilterTerm {
        key: k.into(),
        values: vec![v],
    };
    let mut out = vec![];
    for project in projects {
        let mut filter = vec![term("data.project", project.clone())];
        for (k, v) in [
            ("data.stage", &f.stage),
            ("data.service", &f.service),
            ("id", &f.event_id),
        ] {
            if let Some(v) = v {
                filter.push(term(k, v.clone()));
            }
        }
        let triggers: Vec<KeptnEvent> = store
            .query_by_type(&TypeQuery {
                ty: f.ty.clone(),
                filter,
                exclude_invalidated: false,
                from_time: None,
                limit: MAX_PAGE_SIZE,
            })
            .await?
            .into_iter()
            // The shipyard's own triggers are tracked in its lanes.
            .filter(|e| e.source != SHIPYARD_SOURCE)
            .collect();
        if triggers.is_empty() {
            continue;
        }
        let answered: HashSet<String> = store
            .query_by_type(&TypeQuery {
                ty: format!("sh.keptn.event.{task}.finished"),
                filter: vec![
                    term("data.project", project.clone()),
                    FilterTerm {
                        key: "triggeredid".into(),
                        values: triggers.iter().map(|e| e.id.clone()).collect(),
                    },
                ],
                exclude_invalidated: false,
                from_time: None,
                limit: MAX_PAGE_SIZE,
            })
            .await?
            .into_iter()
            .filter_map(|e| e.triggeredid)
            .collect();
        out.extend(triggers.into_iter().filter(|e| !answered.contains(&e.id)));
    }
    Ok(out)
}
