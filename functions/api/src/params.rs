//! Query-string parameters with Keptn-shaped errors.

use crate::error::ApiError;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use keelson_core::query::{parse_page_key, parse_page_size};
use keelson_core::Timestamp;
use std::collections::HashMap;

/// All query parameters as strings.
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Query(m)| Params(m))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
    }
}

impl Params {
    /// A non-empty parameter.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }
    /// An owned non-empty parameter.
    pub fn string(&self, k: &str) -> Option<String> {
        self.get(k).map(str::to_string)
    }
    /// A time parameter (RFC 3339 or Keptn's `2006-01-02T15:04:05`).
    pub fn time(&self, k: &str) -> Result<Option<Timestamp>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => Timestamp::parse(v).map(Some).ok_or_else(|| {
                ApiError::bad_request(format!("{k}: {v:?} is not a time (use RFC 3339)"))
            }),
        }
    }
    /// A boolean parameter.
    pub fn flag(&self, k: &str) -> Result<bool, ApiError> {
        match self.get(k) {
            None => Ok(false),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(ApiError::bad_request(format!(
                "{k}: {v:?} is not true or false"
            ))),
        }
    }
    /// `pageSize` (1..=max) and the `nextPageKey` offset.
    pub fn page(&self, size_key: &str, max: usize) -> Result<(usize, usize), ApiError> {
        let size = parse_page_size(size_key, self.get(size_key), max)?;
        let offset = parse_page_key(self.get("nextPageKey"))?;
        Ok((size, offset))
    }
}

/// Slices a page out of `items`; returns the page and Keptn's controlPlane `nextPageKey` ("0" when done).
pub fn paginate<T: Clone>(items: &[T], size: usize, offset: usize) -> (Vec<T>, String) {
    let page: Vec<T> = items.iter().skip(offset).take(size).cloned().collect();
    let next = if offset.saturating_add(size) < items.len() {
        offset.saturating_add(size).to_string()
    } else {
        "0".to_string()
    };
    (page, next)
}

/// A controlPlane list page: `{<key>: [...], nextPageKey, pageSize, totalCount}`.
pub fn page_json(
    key: &str,
    items: &[serde_json::Value],
    size: usize,
    offset: usize,
) -> serde_json::Value {
    let (page, next) = paginate(items, size, offset);
    serde_json::json!({key: page, "nextPageKey": next, "pageSize": size, "totalCount": items.len()})
}
