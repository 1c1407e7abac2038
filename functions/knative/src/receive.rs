//! CloudEvents in and out over HTTP: binary and structured mode in (the
//! CloudEvents SDK's HTTP binding), Keelson's [`KeptnEvent`] inside, a
//! structured-mode reply out.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cloudevents::event::Data;
use keelson_core::event::KeptnEvent;
use keelson_core::Timestamp;
use serde_json::{json, Value};

/// Extension attributes the Knative Broker adds for its own bookkeeping
/// (`knativearrivaltime`, …): not part of the event a Keptn user sent, so
/// not stored with it.
const KNATIVE_PREFIX: &str = "knative";

/// Why a request is not a usable CloudEvent.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// Neither binary nor structured mode, or a required attribute is missing.
    #[error("not a CloudEvent: {0}")]
    NotACloudEvent(String),
    /// A CloudEvent, but not one Keelson can read as a Keptn event.
    #[error("not a Keptn event: {0}")]
    NotAKeptnEvent(String),
}

impl IntoResponse for ReceiveError {
    fn into_response(self) -> Response {
        error_response(StatusCode::BAD_REQUEST, &self.to_string())
    }
}

/// The CloudEvents HTTP binding percent-encodes attribute values in binary
/// mode (space, `"`, `%` and everything outside printable ASCII; Knative's
/// broker does); the SDK reads them as they are, so string attributes whose
/// header carried a `%` are decoded here. A value that does not decode to
/// UTF-8 is left as it came.
fn percent_decode_attributes(headers: &HeaderMap, obj: &mut serde_json::Map<String, Value>) {
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        if !value.as_bytes().contains(&b'%') {
            continue;
        }
        if let Some(Value::String(v)) = obj.get_mut(attr) {
            if let Ok(decoded) = String::from_utf8(percent_decode(v.as_bytes())) {
                *v = decoded;
            }
        }
    }
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// A Keptn-shaped error body: `{"code": …, "message": …}`.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": status.as_u16(), "message": message})),
    )
        .into_response()
}

/// Reads a CloudEvent from a request in binary or structured mode. An event
/// without `time` gets `now` (the CloudEvents spec makes it optional; Keptn
/// events always carry one). With `keep_knative`, the broker's own
/// extension attributes are kept (the dead-letter sink wants them).
pub fn read_event(
    headers: &HeaderMap,
    body: Bytes,
    now: Timestamp,
    keep_knative: bool,
) -> Result<KeptnEvent, ReceiveError> {
    let mut ce = cloudevents::binding::http::to_event(headers, body.to_vec())
        .map_err(|e| ReceiveError::NotACloudEvent(e.to_string()))?;
    // Binary mode gives the body as bytes; Keptn events carry JSON.
    let (content_type, schema, data) = ce.take_data();
    let data = match data {
        None => Value::Null,
        Some(Data::Json(v)) => v,
        Some(Data::String(s)) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        Some(Data::Binary(b)) => match serde_json::from_slice(&b) {
            Ok(v) => v,
            Err(_) => match String::from_utf8(b) {
                Ok(s) => Value::String(s),
                Err(_) => {
                    return Err(ReceiveError::NotAKeptnEvent(
                        "data is neither JSON nor text".into(),
                    ))
                }
            },
        },
    };
    let mut v =
        serde_json::to_value(&ce).map_err(|e| ReceiveError::NotAKeptnEvent(e.to_string()))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(ReceiveError::NotAKeptnEvent("not an object".into()));
    };
    percent_decode_attributes(headers, obj);
    obj.insert("data".into(), data);
    if let Some(ct) = content_type {
        obj.insert("datacontenttype".into(), Value::String(ct));
    }
    if let Some(s) = schema {
        obj.insert("dataschema".into(), Value::String(s.to_string()));
    }
    if !obj.contains_key("time") {
        obj.insert(
            "time".into(),
            serde_json::to_value(now).unwrap_or(Value::Null),
        );
    }
    if !keep_knative {
        obj.retain(|k, _| !k.starts_with(KNATIVE_PREFIX));
    }
    serde_json::from_value(v).map_err(|e| ReceiveError::NotAKeptnEvent(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, HeaderValue};

    fn now() -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000)
    }

    fn binary_headers(extra: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "e1"),
            ("ce-source", "tests"),
            ("ce-type", "sh.keptn.event.dev.delivery.triggered"),
            ("ce-time", "2024-01-02T03:04:05.678Z"),
            ("ce-shkeptncontext", "ctx-1"),
            ("content-type", "application/json"),
        ]
        .iter()
        .chain(extra)
        {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_binary_mode_event_becomes_a_keptn_event_without_the_brokers_attributes() {
        let h = binary_headers(&[
            ("ce-triggeredid", "t1"),
            ("ce-knativearrivaltime", "2024-01-02T03:04:05Z"),
        ]);
        let ev = read_event(&h, Bytes::from(r#"{"project":"p"}"#), now(), false).unwrap();
        assert_eq!(ev.id, "e1");
        assert_eq!(ev.ty, "sh.keptn.event.dev.delivery.triggered");
        assert_eq!(ev.shkeptncontext, "ctx-1");
        assert_eq!(ev.triggeredid.as_deref(), Some("t1"));
        assert_eq!(ev.data, json!({"project": "p"}));
        assert_eq!(ev.time.millis(), 1_704_164_645_678);
        assert!(ev.extensions.is_empty(), "{:?}", ev.extensions);
        let kept = read_event(&h, Bytes::from("{}"), now(), true).unwrap();
        assert!(kept.extensions.contains_key("knativearrivaltime"));
    }

    #[test]
    fn a_structured_mode_event_round_trips() {
        let ev = KeptnEvent::new(
            "e2".into(),
            "shipyard-controller",
            "sh.keptn.event.deployment.triggered".into(),
            "ctx",
            json!({"project": "p", "stage": "dev"}),
            now(),
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::sink::STRUCTURED),
        );
        let body = serde_json::to_vec(&ev).unwrap();
        assert_eq!(read_event(&h, Bytes::from(body), now(), false).unwrap(), ev);
    }

    #[test]
    fn the_brokers_delivery_fixture_is_read_as_a_keptn_event() {
        let raw = include_str!("../../../events-fixtures/approval.triggered.binary.http");
        let (head, body) = raw.split_once("\n\n").unwrap();
        let mut h = HeaderMap::new();
        for line in head.lines().skip(1) {
            let (k, v) = line.split_once(": ").unwrap();
            h.insert(
                axum::http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let ev = read_event(&h, Bytes::from(body.trim_end().to_string()), now(), false).unwrap();
        assert_eq!(ev.ty, "sh.keptn.event.approval.triggered");
        assert_eq!(ev.source, "shipyard-controller");
        assert_eq!(ev.shkeptncontext, "08735340-6f9e-4b32-97ff-3b6c292bc50c");
        assert_eq!(
            ev.gitcommitid.as_deref(),
            Some("3b2a9e0f8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a")
        );
        assert_eq!(ev.shkeptnspecversion.as_deref(), Some("0.2.4"));
        assert_eq!(ev.data["approval"]["pass"], json!("automatic"));
        assert!(ev.extensions.is_empty(), "{:?}", ev.extensions);
    }

    #[test]
    fn percent_encoded_attribute_values_are_decoded() {
        let h = binary_headers(&[
            ("ce-source", "my%20service%20%C3%BC"),
            ("ce-owner", "100%25%20sure%"),
        ]);
        let ev = read_event(&h, Bytes::from("{}"), now(), false).unwrap();
        assert_eq!(ev.source, "my service ü");
        assert_eq!(ev.extensions["owner"], json!("100% sure%"));
        // A value that is not UTF-8 once decoded stays as it came.
        let bad = binary_headers(&[("ce-owner", "%FF%FE")]);
        let ev = read_event(&bad, Bytes::from("{}"), now(), false).unwrap();
        assert_eq!(ev.extensions["owner"], json!("%FF%FE"));
    }

    #[test]
    fn an_event_without_time_is_stamped_and_garbage_is_refused_with_a_reason() {
        let mut h = binary_headers(&[]);
        h.remove("ce-time");
        let ev = read_event(&h, Bytes::from("{}"), now(), false).unwrap();
        assert_eq!(ev.time, now());
        let mut no_id = binary_headers(&[]);
        no_id.remove("ce-id");
        let err = read_event(&no_id, Bytes::from("{}"), now(), false).unwrap_err();
        assert!(matches!(err, ReceiveError::NotACloudEvent(_)), "{err}");
        assert!(err.to_string().contains("id"), "{err}");
        let plain = HeaderMap::new();
        assert!(read_event(&plain, Bytes::from("hello"), now(), false).is_err());
    }
}
