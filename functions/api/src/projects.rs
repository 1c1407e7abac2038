//! Projects, stages and services (`/api/controlPlane/v1/project…`).

use crate::error::{parse_body, ApiError};
use crate::params::{page_json, paginate, Params};
use crate::{Api, AppState};
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use keelson_core::event::KeptnEvent;
use keelson_core::ids;
use keelson_core::ports::{
    Clock, EventBus, ExecutionFilter, ProjectStore, SequenceStore, Store, StoreError, Versioned,
};
use keelson_core::project::{validate_project_name, validate_service_name, Project, Service};
use keelson_core::resource::{Change, Scope, SHIPYARD_URI};
use keelson_core::sequence::Execution;
use keelson_core::shipyard::Shipyard;
use keelson_core::Timestamp;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Page size limit of the controlPlane lists (Keptn documents 50).
const MAX_PAGE: usize = 50;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GitCredentials {
    #[serde(default, rename = "remoteURL")]
    remote_url: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProjectBody {
    name: Option<String>,
    shipyard: Option<String>,
    #[serde(default)]
    git_credentials: Option<GitCredentials>,
}

/// Loads a project or answers 404.
pub async fn load<S: ProjectStore>(store: &S, name: &str) -> Result<Versioned<Project>, ApiError> {
    store
        .get_project(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("project {name} not found")))
}

fn decode_shipyard(b64: &str) -> Result<(String, Shipyard), ApiError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| ApiError::bad_request(format!("shipyard: not valid base64: {e}")))?;
    let text =
        String::from_utf8(bytes).map_err(|_| ApiError::bad_request("shipyard: not UTF-8 text"))?;
    let sy = Shipyard::parse(&text).map_err(|e| ApiError::bad_request(format!("shipyard: {e}")))?;
    Ok((text, sy))
}

/// Keptn's creationDate: Unix nanoseconds as a decimal string.
fn creation_date(t: Timestamp) -> String {
    (t.millis() as i128 * 1_000_000).to_string()
}

async fn publish_control<S: Store, B: EventBus, C: Clock>(
    api: &Api<S, B, C>,
    ty: &str,
    data: Value,
) -> Result<(), ApiError> {
    let now = api.orch.clock().now();
    let ctx = ids::random();
    let started = KeptnEvent::new(
        ids::random(),
        "shipyard-controller",
        format!("sh.keptn.event.{ty}.started"),
        &ctx,
        data.clone(),
        now,
    );
    let mut fin_data = data;
    if let Some(o) = fin_data.as_object_mut() {
        o.insert("status".into(), json!("succeeded"));
        o.insert("result".into(), json!("pass"));
    }
    let mut finished = KeptnEvent::new(
        ids::random(),
        "shipyard-controller",
        format!("sh.keptn.event.{ty}.finished"),
        &ctx,
        fin_data,
        now,
    );
    finished.triggeredid = Some(started.id.clone());
    api.orch.bus().publish(&[started, finished]).await?;
    Ok(())
}

/// `POST /project`.
pub async fn create<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: ProjectBody = parse_body(&body)?;
    let name = body
        .name
        .ok_or_else(|| ApiError::bad_request("name: is required"))?;
    validate_project_name(&name)?;
    let b64 = body
        .shipyard
        .ok_or_else(|| ApiError::bad_request("shipyard: is required"))?;
    let (text, sy) = decode_shipyard(&b64)?;
    let now = state.orch.clock().now();
    let git = body.git_credentials;
    let project = Project {
        name: name.clone(),
        creation_date: now,
        shipyard: text,
        shipyard_version: sy.api_version.clone(),
        stages: sy.stage_names(),
        services: vec![],
        git_remote_url: git.as_ref().and_then(|g| g.remote_url.clone()),
        git_user: git.as_ref().and_then(|g| g.user.clone()),
    };
    match state.store().create_project(&project, now).await {
        Ok(_) => {}
        Err(StoreError::AlreadyExists(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("project {name} already exists"),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    publish_control(
        &state,
        "project.create",
        json!({"project": name, "createdProject": {"projectName": name, "shipyard": b64}}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({}))))
}

/// `PUT /project`: replaces the shipyard; stage names may not change (Keptn's rule).
pub async fn update<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: ProjectBody = parse_body(&body)?;
    let name = body
        .name
        .ok_or_else(|| ApiError::bad_request("name: is required"))?;
    let current = load(state.store(), &name).await?;
    let mut shipyard = None;
    if let Some(b64) = body.shipyard.filter(|s| !s.is_empty()) {
        let (text, sy) = decode_shipyard(&b64)?;
        if sy.stage_names() != current.value.stages {
            return Err(ApiError::bad_request(
                "shipyard: stages cannot be added, removed or renamed after the project was created",
            ));
        }
        state
            .store()
            .write_resources(
                &name,
                &Scope::project(),
                &[Change {
                    uri: SHIPYARD_URI.into(),
                    content: Some(text.clone().into_bytes()),
                }],
                state.orch.clock().now(),
            )
            .await?;
        shipyard = Some((text, sy.api_version));
    }
    // The shipyard resource is committed; the project record follows it, re-applied on conflicts.
    let git = body.git_credentials;
    modify(state.store(), &name, |p| {
        if let Some((text, version)) = &shipyard {
            p.shipyard = text.clone();
            p.shipyard_version = version.clone();
        }
        if let Some(g) = &git {
            p.git_remote_url = g.remote_url.clone();
            p.git_user = g.user.clone();
        }
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!({}))))
}

/// `DELETE /project/{p}`.
pub async fn delete<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !state.store().delete_project(&name).await? {
        return Err(ApiError::not_found(format!("project {name} not found")));
    }
    publish_control(&state, "project.delete", json!({"project": name})).await?;
    Ok(Json(json!({"message": format!("project {name} deleted")})))
}

/// Per-lane facts for the expanded views.
struct Activity {
    execs: Vec<Execution>,
}

impl Activity {
    async fn of<S: SequenceStore>(store: &S, project: &str) -> Result<Self, ApiError> {
        let execs = store
            .list_executions(&ExecutionFilter {
                project: project.into(),
                ..Default::default()
            })
            .await?;
        Ok(Activity { execs })
    }

    fn lane(&self, stage: &str, service: &str) -> impl Iterator<Item = &Execution> {
        let (stage, service) = (stage.to_string(), service.to_string());
        self.execs
            .iter()
            .filter(move |e| e.stage == stage && e.service == service)
    }

    fn expanded_service(&self, stage: &str, svc: &Service) -> Value {
        let mut image = None;
        let mut last_types = Map::new();
        for e in self.lane(stage, &svc.name) {
            if e.image.is_some() && e.result.as_deref().is_some_and(|r| r != "fail") {
                image = e.image.clone();
            }
            if let Some(ev) = &e.latest_event {
                last_types.insert(ev.ty.clone(), json!({"eventId": ev.id, "keptnContext": e.keptn_context, "time": creation_date(ev.time)}));
            }
        }
        json!({
            "serviceName": svc.name,
            "creationDate": creation_date(svc.creation_date),
            "deployedImage": image.unwrap_or_default(),
            "lastEventTypes": last_types,
            "openRemediations": self.open_remediations(stage, &svc.name),
        })
    }

    /// Remediation sequences of the lane that have not ended (Keptn's
    /// `models.Remediation`): the latest event, and the action chosen by the
    /// latest `get-action` of the sequence, once there is one.
    fn open_remediations(&self, stage: &str, service: &str) -> Value {
        let open: Vec<Value> = self
            .lane(stage, service)
            .filter(|e| e.sequence == "remediation" && !e.state.is_terminal())
            .map(|e| {
                let action = e
                    .previous_tasks
                    .iter()
                    .rev()
                    .find(|t| t.name == "get-action")
                    .and_then(|t| t.properties.pointer("/action/action"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let (ty, id, time) = match &e.latest_event {
                    Some(ev) => (ev.ty.clone(), ev.id.clone(), ev.time),
                    None => (String::new(), String::new(), e.triggered_at),
                };
                json!({"type": ty, "eventId": id, "keptnContext": e.keptn_context,
                       "time": creation_date(time), "action": action})
            })
            .collect();
        Value::Array(open)
    }

    fn last_event_context(&self, stage: Option<&str>) -> Value {
        self.execs
            .iter()
            .filter(|e| stage.is_none_or(|s| e.stage == s))
            .filter_map(|e| e.latest_event.as_ref().map(|ev| (e, ev)))
            .max_by_key(|(_, ev)| ev.time)
            .map(|(e, ev)| json!({"eventId": ev.id, "keptnContext": e.keptn_context, "time": creation_date(ev.time)}))
            .unwrap_or(Value::Null)
    }

    fn expanded_stage(&self, p: &Project, sy: Option<&Shipyard>, stage: &str) -> Value {
        let parents: Vec<String> = sy
            .and_then(|s| s.stage(stage))
            .map(|st| {
                let mut v: Vec<String> = st
                    .sequences
                    .iter()
                    .flat_map(|q| q.triggered_on.iter())
                    .filter_map(|t| t.event.split('.').next().map(str::to_string))
                    .filter(|s| s != stage)
                    .collect();
                v.dedup();
                v
            })
            .unwrap_or_default();
        json!({
            "stageName": stage,
            "parentStages": parents,
            "services": p.services.iter().map(|s| self.expanded_service(stage, s)).collect::<Vec<_>>(),
            "lastEventContext": self.last_event_context(Some(stage)),
        })
    }
}

fn expanded_project(p: &Project, act: &Activity) -> Value {
    let sy = Shipyard::parse(&p.shipyard).ok();
    json!({
        "projectName": p.name,
        "creationDate": creation_date(p.creation_date),
        "shipyard": p.shipyard,
        "shipyardVersion": p.shipyard_version,
        "gitCredentials": {"remoteURL": p.git_remote_url.clone().unwrap_or_default(), "user": p.git_user.clone().unwrap_or_default()},
        "gitRemoteURI": p.git_remote_url.clone().unwrap_or_default(),
        "isUpstreamAutoProvisioned": false,
        "lastEventContext": act.last_event_context(None),
        "stages": p.stages.iter().map(|s| act.expanded_stage(p, sy.as_ref(), s)).collect::<Vec<_>>(),
    })
}

/// `GET /project`.
pub async fn list<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let (size, offset) = params.page("pageSize", MAX_PAGE)?;
    let all = state.store().list_projects().await?;
    let (page, next) = paginate(&all, size, offset);
    let mut out = Vec::new();
    for p in &page {
        let act = Activity::of(state.store(), &p.name).await?;
        out.push(expanded_project(p, &act));
    }
    Ok(Json(
        json!({"projects": out, "nextPageKey": next, "pageSize": size, "totalCount": all.len()}),
    ))
}

/// `GET /project/{p}`.
pub async fn get_one<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = load(state.store(), &name).await?.value;
    let act = Activity::of(state.store(), &name).await?;
    Ok(Json(expanded_project(&p, &act)))
}

pub(crate) fn check_stage(p: &Project, stage: &str) -> Result<(), ApiError> {
    if p.stages.iter().any(|s| s == stage) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "stage {stage} not found in project {}",
            p.name
        )))
    }
}

/// `GET /project/{p}/stage`.
pub async fn stages<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let (size, offset) = params.page("pageSize", MAX_PAGE)?;
    let p = load(state.store(), &name).await?.value;
    let act = Activity::of(state.store(), &name).await?;
    let sy = Shipyard::parse(&p.shipyard).ok();
    let all: Vec<Value> = p
        .stages
        .iter()
        .map(|s| act.expanded_stage(&p, sy.as_ref(), s))
        .collect();
    Ok(Json(page_json("stages", &all, size, offset)))
}

/// `GET /project/{p}/stage/{s}`.
pub async fn stage<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path((name, stage)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let p = load(state.store(), &name).await?.value;
    check_stage(&p, &stage)?;
    let act = Activity::of(state.store(), &name).await?;
    let sy = Shipyard::parse(&p.shipyard).ok();
    Ok(Json(act.expanded_stage(&p, sy.as_ref(), &stage)))
}

/// `GET /project/{p}/stage/{s}/service`.
pub async fn services<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path((name, stage)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let (size, offset) = params.page("pageSize", MAX_PAGE)?;
    let p = load(state.store(), &name).await?.value;
    check_stage(&p, &stage)?;
    let act = Activity::of(state.store(), &name).await?;
    let all: Vec<Value> = p
        .services
        .iter()
        .map(|s| act.expanded_service(&stage, s))
        .collect();
    Ok(Json(page_json("services", &all, size, offset)))
}

/// `GET /project/{p}/stage/{s}/service/{svc}`.
pub async fn service<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path((name, stage, service)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let p = load(state.store(), &name).await?.value;
    check_stage(&p, &stage)?;
    let svc = p.service(&service).ok_or_else(|| {
        ApiError::not_found(format!("service {service} not found in project {name}"))
    })?;
    let act = Activity::of(state.store(), &name).await?;
    Ok(Json(act.expanded_service(&stage, svc)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceBody {
    service_name: Option<String>,
}

/// `POST /project/{p}/service`.
pub async fn create_service<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: ServiceBody = parse_body(&body)?;
    let service = body
        .service_name
        .ok_or_else(|| ApiError::bad_request("serviceName: is required"))?;
    validate_service_name(&service)?;
    let now = state.orch.clock().now();
    modify(state.store(), &name, |p| {
        if p.service(&service).is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("service {service} already exists in project {name}"),
            ));
        }
        p.services.push(Service {
            name: service.clone(),
            creation_date: now,
        });
        Ok(())
    })
    .await?;
    publish_control(
        &state,
        "service.create",
        json!({"project": name, "service": service}),
    )
    .await?;
    Ok(Json(json!({})))
}

/// `DELETE /project/{p}/service/{svc}`.
pub async fn delete_service<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path((name, service)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    modify(state.store(), &name, |p| {
        if p.service(&service).is_none() {
            return Err(ApiError::not_found(format!(
                "service {service} not found in project {name}"
            )));
        }
        p.services.retain(|s| s.name != service);
        Ok(())
    })
    .await?;
    publish_control(
        &state,
        "service.delete",
        json!({"project": name, "service": service}),
    )
    .await?;
    Ok(Json(
        json!({"message": format!("service {service} deleted")}),
    ))
}

/// Applies `change` to the stored project with a conditional write, re-reading
/// and re-applying when another writer got there first.
pub(crate) async fn modify<S: ProjectStore>(
    store: &S,
    name: &str,
    mut change: impl FnMut(&mut Project) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    loop {
        let cur = load(store, name).await?;
        let mut p = cur.value;
        change(&mut p)?;
        match store.update_project(&p, cur.version).await {
            Ok(()) => return Ok(()),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Used by other modules: the project exists.
pub async fn exists<S: Store, B: EventBus, C: Clock>(
    api: &Arc<Api<S, B, C>>,
    name: &str,
) -> Result<Project, ApiError> {
    Ok(load(api.store(), name).await?.value)
}
