//! The resource-service API: versioned files per project / stage / service.

use crate::error::{parse_body, ApiError};
use crate::params::{page_json, Params};
use crate::projects::load;
use crate::{Api, AppState};
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, MethodRouter};
use axum::Json;
use base64::Engine;
use keelson_core::ports::{Clock, EventBus, Store};
use keelson_core::resource::{normalize_uri, Change, Scope, SHIPYARD_URI};
use keelson_core::shipyard::Shipyard;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

type PathMap = Path<HashMap<String, String>>;

/// GET (list), POST (create), PUT (bulk upsert) on `…/resource`.
pub fn collection<S: Store, B: EventBus, C: Clock>() -> MethodRouter<Arc<Api<S, B, C>>> {
    get(list::<S, B, C>)
        .post(create::<S, B, C>)
        .put(upsert::<S, B, C>)
}

/// GET, PUT, DELETE on `…/resource/{uri}`.
pub fn item<S: Store, B: EventBus, C: Clock>() -> MethodRouter<Arc<Api<S, B, C>>> {
    get(read::<S, B, C>)
        .put(put_one::<S, B, C>)
        .delete(delete_one::<S, B, C>)
}

struct Target {
    project: String,
    scope: Scope,
}

async fn target<S: Store, B: EventBus, C: Clock>(
    api: &Api<S, B, C>,
    p: &HashMap<String, String>,
) -> Result<Target, ApiError> {
    let project = p.get("project").cloned().unwrap_or_default();
    let proj = load(api.store(), &project).await?.value;
    let stage = p.get("stage").cloned();
    let service = p.get("service").cloned();
    if let Some(s) = &stage {
        if !proj.stages.contains(s) {
            return Err(ApiError::not_found(format!(
                "stage {s} not found in project {project}"
            )));
        }
    }
    if let Some(s) = &service {
        if proj.service(s).is_none() {
            return Err(ApiError::not_found(format!(
                "service {s} not found in project {project}"
            )));
        }
    }
    Ok(Target {
        project,
        scope: Scope { stage, service },
    })
}

fn metadata(scope: &Scope, version: &str) -> Value {
    json!({"branch": scope.branch(), "upstreamURL": "", "version": version})
}

fn commit_answer(t: &Target, commit: &str) -> Value {
    json!({"commitID": commit, "metadata": metadata(&t.scope, commit)})
}

fn version_param(params: &Params) -> Option<String> {
    params
        .string("gitCommitID")
        .or_else(|| params.string("commitID"))
}

async fn list<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path(p): PathMap,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let t = target(&state, &p).await?;
    let (size, offset) = params.page("pageSize", 100)?;
    let at = version_param(&params);
    let all = state
        .store()
        .list_resources(&t.project, &t.scope, at.as_deref())
        .await?;
    let items: Vec<Value> = all
        .iter()
        .map(|(uri, v)| json!({"resourceURI": uri, "metadata": metadata(&t.scope, v)}))
        .collect();
    Ok(Json(page_json("resources", &items, size, offset)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceIn {
    #[serde(rename = "resourceURI")]
    resource_uri: Option<String>,
    resource_content: Option<String>,
}

#[derive(Deserialize)]
struct ResourcesIn {
    resources: Option<Vec<ResourceIn>>,
}

fn decode(content: Option<&str>) -> Result<Vec<u8>, ApiError> {
    let c = content.ok_or_else(|| ApiError::bad_request("resourceContent: is required"))?;
    base64::engine::general_purpose::STANDARD
        .decode(c.trim())
        .map_err(|e| ApiError::bad_request(format!("resourceContent: not valid base64: {e}")))
}

/// Writes changes; a project-level shipyard.yaml must stay a valid shipyard with the same stages.
async fn write<S: Store, B: EventBus, C: Clock>(
    api: &Api<S, B, C>,
    t: &Target,
    changes: Vec<Change>,
) -> Result<String, ApiError> {
    let shipyard = if t.scope == Scope::project() {
        match changes.iter().rev().find(|c| c.uri == SHIPYARD_URI) {
            Some(Change { content: None, .. }) => {
                return Err(ApiError::bad_request(
                    "resourceURI: shipyard.yaml cannot be deleted",
                ))
            }
            Some(Change {
                content: Some(bytes),
                ..
            }) => {
                let text = String::from_utf8(bytes.clone())
                    .map_err(|_| ApiError::bad_request("shipyard.yaml: not UTF-8 text"))?;
                let sy = Shipyard::parse(&text)
                    .map_err(|e| ApiError::bad_request(format!("shipyard.yaml: {e}")))?;
                Some((text, sy))
            }
            None => None,
        }
    } else {
        None
    };
    let now = api.orch.clock().now();
    if let Some((text, sy)) = shipyard {
        let cur = load(api.store(), &t.project).await?;
        if sy.stage_names() != cur.value.stages {
            return Err(ApiError::bad_request(
                "shipyard.yaml: stages cannot be added, removed or renamed",
            ));
        }
        let commit = api
            .store()
            .write_resources(&t.project, &t.scope, &changes, now)
            .await?;
        crate::projects::modify(api.store(), &t.project, |p| {
            p.shipyard = text.clone();
            p.shipyard_version = sy.api_version.clone();
            Ok(())
        })
        .await?;
        return Ok(commit);
    }
    Ok(api
        .store()
        .write_resources(&t.project, &t.scope, &changes, now)
        .await?)
}

async fn bulk<S: Store, B: EventBus, C: Clock>(
    state: &Api<S, B, C>,
    p: &HashMap<String, String>,
    body: &[u8],
) -> Result<Value, ApiError> {
    let t = target(state, p).await?;
    let body: ResourcesIn = parse_body(body)?;
    let items = body
        .resources
        .ok_or_else(|| ApiError::bad_request("resources: is required"))?;
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "resources: at least one resource is required",
        ));
    }
    let mut changes = Vec::with_capacity(items.len());
    for (i, r) in items.iter().enumerate() {
        let uri = r.resource_uri.as_deref().ok_or_else(|| {
            ApiError::bad_request(format!("resources[{i}].resourceURI: is required"))
        })?;
        let uri =
            normalize_uri(uri).map_err(|e| ApiError::bad_request(format!("resources[{i}].{e}")))?;
        let content = decode(r.resource_content.as_deref())
            .map_err(|e| ApiError::bad_request(format!("resources[{i}].{}", e.message)))?;
        changes.push(Change {
            uri,
            content: Some(content),
        });
    }
    let commit = write(state, &t, changes).await?;
    Ok(commit_answer(&t, &commit))
}

async fn create<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path(p): PathMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    Ok((StatusCode::CREATED, Json(bulk(&state, &p, &body).await?)))
}

async fn upsert<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path(p): PathMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(bulk(&state, &p, &body).await?))
}

fn uri_of(p: &HashMap<String, String>) -> Result<String, ApiError> {
    Ok(normalize_uri(
        p.get("uri").map(String::as_str).unwrap_or_default(),
    )?)
}

async fn read<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path(p): PathMap,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let t = target(&state, &p).await?;
    let uri = uri_of(&p)?;
    let at = version_param(&params);
    let r = state
        .store()
        .read_resource(&t.project, &t.scope, &uri, at.as_deref())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("resource {uri} not found")))?;
    Ok(Json(json!({
        "resourceURI": r.uri,
        "resourceContent": base64::engine::general_purpose::STANDARD.encode(&r.content),
        "metadata": metadata(&t.scope, &r.version),
    })))
}

async fn put_one<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path(p): PathMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let t = target(&state, &p).await?;
    let uri = uri_of(&p)?;
    let body: ResourceIn = parse_body(&body)?;
    let content = decode(body.resource_content.as_deref())?;
    let commit = write(
        &state,
        &t,
        vec![Change {
            uri,
            content: Some(content),
        }],
    )
    .await?;
    Ok(Json(commit_answer(&t, &commit)))
}

async fn delete_one<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path(p): PathMap,
) -> Result<Json<Value>, ApiError> {
    let t = target(&state, &p).await?;
    let uri = uri_of(&p)?;
    if state
        .store()
        .read_resource(&t.project, &t.scope, &uri, None)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!("resource {uri} not found")));
    }
    let commit = write(&state, &t, vec![Change { uri, content: None }]).await?;
    Ok(Json(commit_answer(&t, &commit)))
}
