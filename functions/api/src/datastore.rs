//! The mongodb-datastore query API (`/api/mongodb-datastore/event…`).

use crate::error::ApiError;
use crate::params::Params;
use crate::AppState;
use axum::extract::Path;
use axum::Json;
use keelson_core::ports::{Clock, EventBus, Store};
use keelson_core::query::{parse_filter, parse_page_size, EventQuery, TypeQuery, MAX_PAGE_SIZE};
use serde_json::{json, Value};

/// `GET /event`.
pub async fn events<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let (page_size, offset) = params.page("pageSize", MAX_PAGE_SIZE)?;
    let q = EventQuery {
        keptn_context: params.string("keptnContext"),
        ty: params.string("type"),
        project: params.string("project"),
        stage: params.string("stage"),
        service: params.string("service"),
        event_id: params.string("eventID"),
        source: params.string("source"),
        from_time: params.time("fromTime")?,
        before_time: params.time("beforeTime")?,
        root: params.flag("root")?,
        page_size,
        offset,
    };
    let page = state.store().query_events(&q).await?;
    let mut out = json!({
        "events": page.events.iter().map(|e| e.to_rest_json()).collect::<Vec<_>>(),
        "pageSize": page_size,
        "totalCount": page.total_count,
    });
    if let Some(n) = page.next_offset {
        out["nextPageKey"] = json!(n.to_string());
    }
    Ok(Json(out))
}

/// `GET /event/type/{eventType}?filter=…&excludeInvalidated=…&fromTime=…&limit=…`.
pub async fn by_type<S: Store, B: EventBus, C: Clock>(
    state: AppState<S, B, C>,
    Path(event_type): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let filter = params
        .get("filter")
        .ok_or_else(|| ApiError::bad_request("filter: is required"))?;
    let q = TypeQuery {
        ty: event_type,
        filter: parse_filter(filter)?,
        exclude_invalidated: params.flag("excludeInvalidated")?,
        from_time: params.time("fromTime")?,
        limit: parse_page_size("limit", params.get("limit"), MAX_PAGE_SIZE)?,
    };
    let events = state.store().query_by_type(&q).await?;
    Ok(Json(
        json!({"events": events.iter().map(|e| e.to_rest_json()).collect::<Vec<_>>()}),
    ))
}
