//! Uniform registration: integrations register, ping and are listed.

use crate::error::{parse_body, ApiError};
use crate::params::Params;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use keelson_core::ids;
use keelson_core::ports::{Clock, EventBus, Integration, Store};
use serde_json::{json, Value};

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn validate(body: &Value) -> Result<String, ApiError> {
    let name = str_at(body, "/name");
    if name.is_empty() {
        return Err(ApiError::bad_request("name: is required"));
    }
    let subs = match body.get("subscriptions") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(ApiError::bad_request("subscriptions: must be a list")),
    };
    for (i, s) in subs.iter().enumerate() {
        if str_at(s, "/event").is_empty() {
            return Err(ApiError::bad_request(format!(
                "subscriptions[{i}].event: is required"
            )));
        }
        let f = s.get("filter");
        let stages = strings(f.and_then(|f| f.get("stages")));
        let services = strings(f.and_then(|f| f.get("services")));
        if !services.is_empty() && stages.is_empty() {
            return Err(ApiError::bad_request(format!(
                "subscriptions[{i}].filter: a services filter needs a stages filter"
            )));
        }
        if name == "webhook-service" && strings(f.and_then(|f| f.get("projects"))).len() != 1 {
            return Err(ApiError::bad_request(format!(
                "subscriptions[{i}].filter: webhook-service subscriptions need exactly one project"
            )));
        }
    }
    // Keptn's id: a hash of name, namespace and hostname, so a restarted integration keeps it.
    let key = format!(
        "{name}/{}/{}",
        str_at(body, "/metadata/kubernetesmetadata/namespace"),
        str_at(body, "/metadata/hostname")
    );
    Ok(ids::derive("uniform", &key).replace('-', ""))
}

fn view(i: &Integration) -> Value {
    let mut v = i.body.clone();
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), json!(i.id));
        let meta = o.entry("metadata").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            m.insert("lastseen".into(), json!(i.last_seen));
        }
        // Subscriptions get stable ids so they can be addressed.
        if let Some(Value::Array(subs)) = o.get_mut("subscriptions") {
            for (n, s) in subs.iter_mut().enumerate() {
                if let Some(so) = s.as_object_mut() {
                    so.entry("id")
                        .or_insert_with(|| json!(ids::derive(&i.id, &format!("sub/{n}"))));
                }
            }
        }
    }
    v
}

/// `POST /uniform/registration`: 201 `{id}` when new, 200 when it existed.
pub async fn register<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body: Value = parse_body(&body)?;
    if !body.is_object() {
        return Err(ApiError::bad_request("body: must be an object"));
    }
    let id = validate(&body)?;
    let i = Integration {
        id: id.clone(),
        name: str_at(&body, "/name").into(),
        body,
        last_seen: state.orch.clock().now(),
    };
    let new = state.store().put_integration(&i).await?;
    Ok((
        if new {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(json!({"id": id})),
    ))
}

/// `GET /uniform/registration?id&name&project&stage&service`.
pub async fn list<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let all = state.store().list_integrations().await?;
    let matches_filter = |i: &Integration, key: &str, param: &str| {
        params.get(param).is_none_or(|want| {
            i.body
                .get("subscriptions")
                .and_then(Value::as_array)
                .is_some_and(|subs| {
                    subs.iter().any(|s| {
                        let vals = strings(s.get("filter").and_then(|f| f.get(key)));
                        vals.is_empty() || vals.iter().any(|v| v == want)
                    })
                })
        })
    };
    let out: Vec<Value> = all
        .iter()
        .filter(|i| params.get("id").is_none_or(|v| i.id == v))
        .filter(|i| params.get("name").is_none_or(|v| i.name == v))
        .filter(|i| matches_filter(i, "projects", "project"))
        .filter(|i| matches_filter(i, "stages", "stage"))
        .filter(|i| matches_filter(i, "services", "service"))
        .map(view)
        .collect();
    Ok(Json(Value::Array(out)))
}

/// `DELETE /uniform/registration/{id}`.
pub async fn delete<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !state.store().delete_integration(&id).await? {
        return Err(ApiError::not_found(format!("integration {id} not found")));
    }
    Ok(Json(json!({})))
}

/// `PUT /uniform/registration/{id}/ping`: heartbeat; answers the integration.
pub async fn ping<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut i = state
        .store()
        .get_integration(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("integration {id} not found")))?;
    i.last_seen = state.orch.clock().now();
    state.store().put_integration(&i).await?;
    Ok(Json(view(&i)))
}
