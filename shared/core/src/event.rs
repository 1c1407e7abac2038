//! Keptn CloudEvents (spec §1): the envelope, type classification, the API's
//! validation rules and ingress normalisation.

use crate::error::CoreError;
use crate::ids;
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Prefix of every Keptn event type.
pub const PREFIX: &str = "sh.keptn.event.";
/// Largest event the API accepts (Keptn's api-service limit).
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Longest id, type, context and other context attribute accepted (they are
/// parts of store keys, which have size limits: DynamoDB's are 1–2 KB).
pub const MAX_ATTRIBUTE_BYTES: usize = 256;
/// Longest `source` accepted (a URI reference).
pub const MAX_SOURCE_BYTES: usize = 512;
/// `shkeptnspecversion` stamped on events that carry none.
pub const KEPTN_SPEC_VERSION: &str = "0.2.4";
/// Source of events the API ingests without one (Keptn's default).
pub const DEFAULT_API_SOURCE: &str = "https://github.com/keptn/keptn/api";

/// A Keptn CloudEvent (CloudEvents 1.0, JSON structured mode, plus Keptn's extensions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptnEvent {
    /// Always `"1.0"`.
    pub specversion: String,
    /// Event id; consumers dedupe by it.
    pub id: String,
    /// Emitter (a service name or URI reference).
    pub source: String,
    /// `sh.keptn.event.*` type.
    #[serde(rename = "type")]
    pub ty: String,
    /// When the event happened (UTC, ms).
    pub time: Timestamp,
    /// Content type of `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    /// The run this event belongs to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shkeptncontext: String,
    /// The `.triggered` event this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggeredid: Option<String>,
    /// The configuration version the event refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitcommitid: Option<String>,
    /// Keptn spec version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shkeptnspecversion: Option<String>,
    /// The payload.
    #[serde(default)]
    pub data: Value,
    /// Any other CloudEvents extension attributes.
    #[serde(flatten)]
    pub extensions: BTreeMap<String, Value>,
}

/// The `.kind` part of a Keptn event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Triggered,
    Started,
    Finished,
    Invalidated,
    /// Any other trailing word (`changed` of `status.changed`, …).
    Other(String),
}

impl Kind {
    fn from_word(w: &str) -> Kind {
        match w {
            "triggered" => Kind::Triggered,
            "started" => Kind::Started,
            "finished" => Kind::Finished,
            "invalidated" => Kind::Invalidated,
            o => Kind::Other(o.to_string()),
        }
    }
}

/// A Keptn event type classified by its part count, as Keptn does: five
/// dot-separated parts are a task event, six a sequence event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventType {
    /// `sh.keptn.event.<task>.<kind>`.
    Task { task: String, kind: Kind },
    /// `sh.keptn.event.<stage>.<sequence>.<kind>`.
    Sequence {
        stage: String,
        sequence: String,
        kind: Kind,
    },
    /// Anything else (including non-`sh.keptn.event.` types).
    Other,
}

impl EventType {
    /// Classifies a type string.
    pub fn parse(ty: &str) -> EventType {
        let Some(rest) = ty.strip_prefix(PREFIX) else {
            return EventType::Other;
        };
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return EventType::Other;
        }
        match parts.as_slice() {
            [task, kind] => EventType::Task {
                task: task.to_string(),
                kind: Kind::from_word(kind),
            },
            [stage, sequence, kind] => EventType::Sequence {
                stage: stage.to_string(),
                sequence: sequence.to_string(),
                kind: Kind::from_word(kind),
            },
            _ => EventType::Other,
        }
    }
}

/// `sh.keptn.event.<task>.<kind>`.
pub fn task_type(task: &str, kind: &str) -> String {
    format!("{PREFIX}{task}.{kind}")
}

/// `sh.keptn.event.<stage>.<sequence>.<kind>`.
pub fn sequence_type(stage: &str, sequence: &str, kind: &str) -> String {
    format!("{PREFIX}{stage}.{sequence}.{kind}")
}

/// `project`, `stage`, `service` and `labels` of an event's data (those that
/// are set): what an answer to a task trigger repeats.
pub fn reply_data(data: &Value) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for k in ["project", "stage", "service", "labels"] {
        if let Some(v) = data.get(k).filter(|v| !v.is_null()) {
            m.insert(k.into(), v.clone());
        }
    }
    m
}

impl KeptnEvent {
    /// A new event with the usual defaults.
    pub fn new(
        id: String,
        source: &str,
        ty: String,
        shkeptncontext: &str,
        data: Value,
        time: Timestamp,
    ) -> Self {
        KeptnEvent {
            specversion: "1.0".into(),
            id,
            source: source.into(),
            ty,
            time,
            datacontenttype: Some("application/json".into()),
            shkeptncontext: shkeptncontext.into(),
            triggeredid: None,
            gitcommitid: None,
            shkeptnspecversion: Some(KEPTN_SPEC_VERSION.into()),
            data,
            extensions: BTreeMap::new(),
        }
    }

    /// An event of type `ty` from `source` answering this one (a task
    /// trigger): same context and commit, `triggeredid` = this id, and an id
    /// derived from this id and `purpose`, so a redelivered trigger is
    /// answered with the same ids.
    pub fn reply(
        &self,
        source: &str,
        ty: String,
        purpose: &str,
        data: Value,
        now: Timestamp,
    ) -> KeptnEvent {
        let mut e = KeptnEvent::new(
            ids::derive(&self.id, purpose),
            source,
            ty,
            &self.shkeptncontext,
            data,
            now,
        );
        e.triggeredid = Some(self.id.clone());
        e.gitcommitid = self.gitcommitid.clone();
        e
    }

    /// The classified type.
    pub fn event_type(&self) -> EventType {
        EventType::parse(&self.ty)
    }

    /// A string field of `data`, `None` when absent, empty or not a string.
    pub fn data_str(&self, key: &str) -> Option<&str> {
        self.data
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// `data.project`.
    pub fn project(&self) -> Option<&str> {
        self.data_str("project")
    }
    /// `data.stage`.
    pub fn stage(&self) -> Option<&str> {
        self.data_str("stage")
    }
    /// `data.service`.
    pub fn service(&self) -> Option<&str> {
        self.data_str("service")
    }

    /// Serialises as compact JSON (infallible for this type).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The Keptn REST shape (`KeptnContextExtendedCE`): as the CloudEvent, plus
    /// `contenttype` for clients written against Keptn's models.
    pub fn to_rest_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let (Some(obj), Some(ct)) = (v.as_object_mut(), &self.datacontenttype) {
            obj.insert("contenttype".into(), Value::String(ct.clone()));
        }
        v
    }

    /// Parses an event from untrusted JSON bytes, accepting both the CloudEvents
    /// structured form and Keptn's REST form (`contenttype`, `extensions`).
    /// Missing `id`, `time` and `specversion` are left for [`normalize_ingress`] to fill.
    pub fn parse_untrusted(bytes: &[u8]) -> Result<KeptnEvent, CoreError> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| CoreError::invalid("body", format!("not valid JSON: {e}")))?;
        Self::from_untrusted_value(v)
    }

    /// As [`KeptnEvent::parse_untrusted`], from a JSON value.
    pub fn from_untrusted_value(v: Value) -> Result<KeptnEvent, CoreError> {
        let Value::Object(mut obj) = v else {
            return Err(CoreError::invalid("body", "must be a JSON object"));
        };
        let ty = take_string(&mut obj, "type", true)?.unwrap_or_default();
        let source = take_string(&mut obj, "source", false)?.unwrap_or_default();
        let id = take_string(&mut obj, "id", false)?.unwrap_or_default();
        let specversion =
            take_string(&mut obj, "specversion", false)?.unwrap_or_else(|| "1.0".into());
        if specversion != "1.0" {
            return Err(CoreError::invalid(
                "specversion",
                format!("must be \"1.0\", got {specversion:?}"),
            ));
        }
        let time = match take_string(&mut obj, "time", false)? {
            None => Timestamp::from_millis(0),
            Some(t) => Timestamp::parse(&t).ok_or_else(|| {
                CoreError::invalid("time", format!("not an RFC 3339 time: {t:?}"))
            })?,
        };
        let ct_keptn = take_string(&mut obj, "contenttype", false)?;
        let ct_ce = take_string(&mut obj, "datacontenttype", false)?;
        if let Some(ct) = ct_ce.as_ref().or(ct_keptn.as_ref()) {
            if !ct.is_empty() && !ct.starts_with("application/json") && !ct.ends_with("+json") {
                return Err(CoreError::invalid(
                    "datacontenttype",
                    format!("only JSON data is supported, got {ct:?}"),
                ));
            }
        }
        let shkeptncontext = take_string(&mut obj, "shkeptncontext", false)?.unwrap_or_default();
        let triggeredid = take_string(&mut obj, "triggeredid", false)?.filter(|s| !s.is_empty());
        let gitcommitid = take_string(&mut obj, "gitcommitid", false)?.filter(|s| !s.is_empty());
        let shkeptnspecversion =
            take_string(&mut obj, "shkeptnspecversion", false)?.filter(|s| !s.is_empty());
        let data = obj.remove("data").unwrap_or(Value::Null);
        if obj.contains_key("data_base64") {
            return Err(CoreError::invalid(
                "data_base64",
                "binary data is not supported",
            ));
        }
        let mut extensions = BTreeMap::new();
        match obj.remove("extensions") {
            None | Some(Value::Null) => {}
            Some(Value::Object(ext)) => {
                for (k, v) in ext {
                    if !is_extension_name(&k) || RESERVED.contains(&k.as_str()) {
                        return Err(CoreError::invalid(
                            format!("extensions.{k}"),
                            "not a CloudEvents extension name (lowercase letters and digits, not a context attribute)",
                        ));
                    }
                    extensions.insert(k, v);
                }
            }
            Some(_) => return Err(CoreError::invalid("extensions", "must be an object")),
        }
        for (k, v) in obj {
            if !is_extension_name(&k) {
                return Err(CoreError::invalid(
                    k.as_str(),
                    "unknown attribute (CloudEvents extension names are lowercase letters and digits)",
                ));
            }
            extensions.insert(k, v);
        }
        Ok(KeptnEvent {
            specversion,
            id,
            source,
            ty,
            time,
            datacontenttype: ct_ce.or(ct_keptn).filter(|s| !s.is_empty()),
            shkeptncontext,
            triggeredid,
            gitcommitid,
            shkeptnspecversion,
            data,
            extensions,
        })
    }
}

/// Attribute names an extension must not take (they are the envelope's own).
const RESERVED: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "datacontenttype",
    "contenttype",
    "shkeptncontext",
    "triggeredid",
    "gitcommitid",
    "shkeptnspecversion",
    "data",
    "extensions",
];

fn is_extension_name(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn take_string(
    obj: &mut Map<String, Value>,
    key: &str,
    required: bool,
) -> Result<Option<String>, CoreError> {
    match obj.remove(key) {
        None | Some(Value::Null) if required => Err(CoreError::invalid(key, "is required")),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let max = if key == "source" {
                MAX_SOURCE_BYTES
            } else {
                MAX_ATTRIBUTE_BYTES
            };
            if required && s.is_empty() {
                Err(CoreError::invalid(key, "must not be empty"))
            } else if s.len() > max {
                Err(CoreError::invalid(
                    key,
                    format!("is {} bytes long; at most {max} are allowed", s.len()),
                ))
            } else {
                Ok(Some(s))
            }
        }
        Some(_) => Err(CoreError::invalid(key, "must be a string")),
    }
}

/// Applies Keptn's API validation (spec §1.2) to an event posted to `/v1/event`.
pub fn validate_for_api(ev: &KeptnEvent) -> Result<(), CoreError> {
    if ev.ty == "sh.keptn.log.error" || ev.ty == "sh.keptn.events.problem" {
        return Ok(());
    }
    if !ev.data.is_object() {
        return Err(CoreError::invalid(
            "data",
            "is required and must be an object",
        ));
    }
    for key in ["project", "stage", "service", "result", "status", "message"] {
        if let Some(v) = ev.data.get(key) {
            if !v.is_string() && !v.is_null() {
                return Err(CoreError::invalid(
                    format!("data.{key}"),
                    "must be a string",
                ));
            }
        }
    }
    if let Some(labels) = ev.data.get("labels") {
        let ok = labels.is_null()
            || labels
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
        if !ok {
            return Err(CoreError::invalid(
                "data.labels",
                "must map strings to strings",
            ));
        }
    }
    if ev.ty == "sh.keptn.event.monitoring.configure" {
        require(ev, "project")?;
        require(ev, "type")?;
        return Ok(());
    }
    match ev.event_type() {
        EventType::Sequence {
            stage,
            sequence,
            kind,
        } => {
            if kind != Kind::Triggered {
                return Err(CoreError::invalid(
                    "type",
                    format!("unknown event type action for {:?}: only sequence .triggered events may be sent", ev.ty),
                ));
            }
            require(ev, "project")?;
            require(ev, "stage")?;
            require(ev, "service")?;
            if ev.stage() != Some(stage.as_str()) {
                return Err(CoreError::invalid(
                    "data.stage",
                    format!("must equal the stage of the event type ({stage:?})"),
                ));
            }
            crate::project::validate_name("type (stage)", &stage)?;
            crate::project::validate_name("type (sequence)", &sequence)?;
            Ok(())
        }
        EventType::Task { kind, .. } => match kind {
            Kind::Started | Kind::Finished => {
                require(ev, "project")?;
                require(ev, "stage")?;
                require(ev, "service")?;
                if ev.triggeredid.is_none() {
                    return Err(CoreError::invalid("triggeredid", "is required"));
                }
                if kind == Kind::Finished {
                    require(ev, "result")?;
                    require(ev, "status")?;
                }
                Ok(())
            }
            Kind::Invalidated => Ok(()),
            _ => Err(CoreError::invalid(
                "type",
                format!(
                    "unknown event type action for {:?}: task events may be .started, .finished or .invalidated",
                    ev.ty
                ),
            )),
        },
        EventType::Other => Err(CoreError::invalid(
            "type",
            format!("unknown event type {:?}", ev.ty),
        )),
    }
}

fn require(ev: &KeptnEvent, key: &str) -> Result<(), CoreError> {
    match ev.data.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        _ => Err(CoreError::invalid(format!("data.{key}"), "is required")),
    }
}

/// Fills what the API stamps on an ingested event: `time` is set to `now`
/// (as Keptn does), `source`, content type and spec version get defaults, and
/// `shkeptncontext` is resolved by Keptn's rule. Unlike Keptn, a client-supplied
/// `id` is kept so that a client retry is idempotent (docs/compatibility.md).
pub fn normalize_ingress(ev: &mut KeptnEvent, now: Timestamp) {
    if ev.id.trim().is_empty() {
        ev.id = ids::random();
    }
    ev.time = now;
    if ev.source.is_empty() {
        ev.source = DEFAULT_API_SOURCE.into();
    }
    ev.datacontenttype = Some("application/json".into());
    ev.specversion = "1.0".into();
    if ev.shkeptnspecversion.is_none() {
        ev.shkeptnspecversion = Some(KEPTN_SPEC_VERSION.into());
    }
    ev.shkeptncontext = if ev.shkeptncontext.is_empty() {
        ids::random()
    } else {
        ids::keptn_context_from(&ev.shkeptncontext)
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(v: Value) -> KeptnEvent {
        KeptnEvent::from_untrusted_value(v).unwrap()
    }

    #[test]
    fn types_are_classified_by_part_count() {
        assert_eq!(
            EventType::parse("sh.keptn.event.deployment.triggered"),
            EventType::Task {
                task: "deployment".into(),
                kind: Kind::Triggered
            }
        );
        assert_eq!(
            EventType::parse("sh.keptn.event.dev.delivery.finished"),
            EventType::Sequence {
                stage: "dev".into(),
                sequence: "delivery".into(),
                kind: Kind::Finished
            }
        );
        // Keptn's quirk: status.changed has six parts, so it classifies as a sequence type.
        assert!(matches!(
            EventType::parse("sh.keptn.event.deployment.status.changed"),
            EventType::Sequence {
                kind: Kind::Other(_),
                ..
            }
        ));
        assert_eq!(EventType::parse("sh.keptn.event.a..b"), EventType::Other);
        assert_eq!(EventType::parse("com.example.x"), EventType::Other);
    }

    #[test]
    fn rest_shape_contenttype_and_extensions_are_accepted() {
        let e = ev(
            json!({"type":"sh.keptn.event.dev.delivery.triggered","contenttype":"application/json",
            "extensions":{"myext":"x"},"traceparent":"00-1","data":{"project":"p"}}),
        );
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(e.extensions.get("myext"), Some(&json!("x")));
        assert_eq!(e.extensions.get("traceparent"), Some(&json!("00-1")));
        assert_eq!(e.to_rest_json()["contenttype"], json!("application/json"));
        let round: KeptnEvent = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(round, e);
    }

    #[test]
    fn overlong_attributes_are_refused_with_their_size() {
        let long = "x".repeat(MAX_ATTRIBUTE_BYTES + 1);
        for key in ["id", "type", "shkeptncontext", "triggeredid"] {
            let mut v = json!({"type": "sh.keptn.event.a.finished", "source": "s", "data": {}});
            v[key] = json!(long);
            let err = KeptnEvent::from_untrusted_value(v).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("{key}: is 257 bytes long; at most 256 are allowed")
            );
        }
        let ok = json!({"type": "sh.keptn.event.a.finished", "source": "s".repeat(MAX_SOURCE_BYTES),
            "id": "i".repeat(MAX_ATTRIBUTE_BYTES), "data": {}});
        assert!(KeptnEvent::from_untrusted_value(ok).is_ok());
    }

    #[test]
    fn untrusted_parse_names_the_field_in_errors() {
        let cases = [
            (json!([1]), "body"),
            (json!({"source":"x"}), "type"),
            (json!({"type":5}), "type"),
            (json!({"type":"t","time":"nope"}), "time"),
            (json!({"type":"t","specversion":"0.3"}), "specversion"),
            (json!({"type":"t","Bad-Attr":1}), "Bad-Attr"),
            (json!({"type":"t","extensions":[1]}), "extensions"),
            (
                json!({"type":"t","datacontenttype":"text/xml"}),
                "datacontenttype",
            ),
            (json!({"type":"t","extensions":{"id":"x"}}), "extensions.id"),
            (
                json!({"type":"t","extensions":{"data":1}}),
                "extensions.data",
            ),
            (json!({"type":"t","extensions":{"Bad":1}}), "extensions.Bad"),
        ];
        for (input, field) in cases {
            match KeptnEvent::from_untrusted_value(input.clone()) {
                Err(CoreError::Invalid { field: f, .. }) => assert_eq!(f, field, "{input}"),
                other => panic!("{input}: expected invalid {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn api_validation_follows_keptn_rules() {
        let ok = [
            json!({"type":"sh.keptn.event.dev.delivery.triggered","data":{"project":"p","stage":"dev","service":"s"}}),
            json!({"type":"sh.keptn.event.deployment.finished","triggeredid":"t","data":{"project":"p","stage":"dev","service":"s","result":"pass","status":"succeeded"}}),
            json!({"type":"sh.keptn.event.deployment.started","triggeredid":"t","data":{"project":"p","stage":"dev","service":"s"}}),
            json!({"type":"sh.keptn.event.evaluation.invalidated","triggeredid":"t","data":{"project":"p"}}),
            json!({"type":"sh.keptn.log.error","data":null}),
            json!({"type":"sh.keptn.event.monitoring.configure","data":{"project":"p","type":"prometheus"}}),
        ];
        for v in ok {
            validate_for_api(&ev(v.clone())).unwrap_or_else(|e| panic!("{v}: {e}"));
        }
        let bad = [
            (
                json!({"type":"sh.keptn.event.dev.delivery.finished","data":{"project":"p","stage":"dev","service":"s"}}),
                "type",
            ),
            (
                json!({"type":"sh.keptn.event.dev.delivery.triggered","data":{"project":"p","stage":"prod","service":"s"}}),
                "data.stage",
            ),
            (
                json!({"type":"sh.keptn.event.dev.delivery.triggered","data":{"project":"p","stage":"dev"}}),
                "data.service",
            ),
            (
                json!({"type":"sh.keptn.event.deployment.triggered","data":{"project":"p","stage":"dev","service":"s"}}),
                "type",
            ),
            (
                json!({"type":"sh.keptn.event.deployment.finished","data":{"project":"p","stage":"dev","service":"s","result":"pass","status":"succeeded"}}),
                "triggeredid",
            ),
            (
                json!({"type":"sh.keptn.event.deployment.finished","triggeredid":"t","data":{"project":"p","stage":"dev","service":"s","status":"succeeded"}}),
                "data.result",
            ),
            (
                json!({"type":"sh.keptn.event.deployment.status.changed","triggeredid":"t","data":{"project":"p","stage":"dev","service":"s"}}),
                "type",
            ),
            (
                json!({"type":"sh.keptn.event.dev.delivery.triggered","data":"x"}),
                "data",
            ),
            (
                json!({"type":"sh.keptn.event.dev.delivery.triggered","data":{"project":1}}),
                "data.project",
            ),
            (
                json!({"type":"sh.keptn.event.dev.delivery.triggered","data":{"project":"p","stage":"dev","service":"s","labels":{"a":1}}}),
                "data.labels",
            ),
            (
                json!({"type":"sh.keptn.event.monitoring.configure","data":{"project":"p"}}),
                "data.type",
            ),
            (json!({"type":"something.else","data":{}}), "type"),
        ];
        for (v, field) in bad {
            match validate_for_api(&ev(v.clone())) {
                Err(CoreError::Invalid { field: f, .. }) => assert_eq!(f, field, "{v}"),
                other => panic!("{v}: expected invalid {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn ingress_normalisation_keeps_client_id_and_resolves_context() {
        let mut e = ev(
            json!({"type":"t","id":"client-1","shkeptncontext":"build-7","time":"2020-01-01T00:00:00Z"}),
        );
        let now = Timestamp::from_millis(1_700_000_000_000);
        normalize_ingress(&mut e, now);
        assert_eq!(e.id, "client-1");
        assert_eq!(e.time, now);
        assert_eq!(e.source, DEFAULT_API_SOURCE);
        assert_eq!(e.shkeptncontext, ids::keptn_context_from("build-7"));
        let mut e = ev(json!({"type":"t"}));
        normalize_ingress(&mut e, now);
        assert!(!e.id.is_empty() && !e.shkeptncontext.is_empty());
    }
}
