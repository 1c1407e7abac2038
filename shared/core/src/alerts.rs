//! Alerts into remediation sequences: Prometheus Alertmanager's webhook
//! payload (version 4), a generic JSON shape for other tools, the mapping of
//! an alert to project / stage / service, the remediation trigger it starts,
//! and maintenance windows.
//!
//! Each alert instance (fingerprint + `startsAt`) has a keptn context derived
//! from it, so repeated and grouped notifications of one firing alert name the
//! same remediation, and its `resolved` notification finds it.

use crate::error::CoreError;
use crate::event::{sequence_type, KeptnEvent, MAX_EVENT_BYTES};
use crate::ids;
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// `source` of the events the alert webhooks publish.
pub const SOURCE: &str = "keelson-alerts";

/// Ledger (applied-event records) of the alert webhooks: one record per
/// started remediation (`firing/<context>`) and per handled resolution.
pub const LEDGER: &str = "alerts";

/// Type of the audit event recorded for every alert notification handled.
pub const RECEIVED_TYPE: &str = "sh.keptn.event.alert.received";

/// Project-level resources holding one maintenance window each.
pub const MAINTENANCE_PREFIX: &str = "keelson/maintenance/";

/// One alert, whatever the tool that sent it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Identity of the alert (Alertmanager's fingerprint, or the generic `id`).
    pub fingerprint: String,
    /// When it started firing (part of the instance's identity), as sent.
    pub starts_at: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Link back to the source.
    pub generator_url: String,
    /// Title (Alertmanager: the `alertname` label).
    pub title: String,
    /// Root cause, when the tool knows one (Alertmanager: a `rootCause` annotation or label).
    pub root_cause: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmPayload {
    version: Option<String>,
    alerts: Option<Vec<AmAlert>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmAlert {
    status: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    fingerprint: Option<String>,
}

fn status_of(field: &str, s: Option<String>) -> Result<String, CoreError> {
    match s.as_deref() {
        Some("firing") | Some("resolved") => Ok(s.unwrap_or_default()),
        Some(o) => Err(CoreError::invalid(
            field,
            format!("{o:?} is not firing or resolved"),
        )),
        None => Err(CoreError::invalid(
            field,
            "is required (firing or resolved)",
        )),
    }
}

/// Parses Alertmanager's webhook body (version 4).
pub fn parse_alertmanager(body: &[u8]) -> Result<Vec<Alert>, CoreError> {
    let p: AmPayload = serde_json::from_slice(body).map_err(|e| {
        CoreError::invalid("body", format!("not an Alertmanager webhook payload: {e}"))
    })?;
    match p.version.as_deref() {
        Some("4") => {}
        Some(v) => {
            return Err(CoreError::invalid(
                "version",
                format!("{v:?} is not supported; Alertmanager sends version \"4\""),
            ))
        }
        None => return Err(CoreError::invalid("version", "is required (\"4\")")),
    }
    let alerts = p
        .alerts
        .ok_or_else(|| CoreError::invalid("alerts", "is required"))?;
    alerts
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let status = status_of(&format!("alerts[{i}].status"), a.status)?;
            let fingerprint = a.fingerprint.filter(|f| !f.is_empty()).ok_or_else(|| {
                CoreError::invalid(format!("alerts[{i}].fingerprint"), "is required")
            })?;
            let title = a.labels.get("alertname").cloned().unwrap_or_default();
            let root_cause = a
                .annotations
                .get("rootCause")
                .or_else(|| a.labels.get("rootCause"))
                .cloned()
                .unwrap_or_default();
            Ok(Alert {
                status,
                fingerprint,
                starts_at: a.starts_at.unwrap_or_default(),
                labels: a.labels,
                annotations: a.annotations,
                generator_url: a.generator_url,
                title,
                root_cause,
            })
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericPayload {
    alerts: Vec<GenericAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GenericAlert {
    id: String,
    status: Option<String>,
    title: String,
    #[serde(default)]
    root_cause: String,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: String,
    #[serde(default)]
    url: String,
}

/// Parses the generic webhook body (docs/alerts.md):
/// `{"alerts": [{"id", "status", "title", "rootCause"?, "project"?, "stage"?,
/// "service"?, "labels"?, "annotations"?, "startsAt"?, "url"?}]}`. `project`,
/// `stage` and `service` become the labels `project`, `stage`, `service`.
pub fn parse_generic(body: &[u8]) -> Result<Vec<Alert>, CoreError> {
    let p: GenericPayload = serde_json::from_slice(body)
        .map_err(|e| CoreError::invalid("body", format!("not a generic alert payload: {e}")))?;
    p.alerts
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            if a.id.trim().is_empty() {
                return Err(CoreError::invalid(format!("alerts[{i}].id"), "is empty"));
            }
            let status = status_of(&format!("alerts[{i}].status"), a.status)?;
            let mut labels = a.labels;
            for (k, v) in [
                ("project", a.project),
                ("stage", a.stage),
                ("service", a.service),
            ] {
                if let Some(v) = v {
                    labels.insert(k.into(), v);
                }
            }
            Ok(Alert {
                status,
                fingerprint: a.id,
                starts_at: a.starts_at,
                labels,
                annotations: a.annotations,
                generator_url: a.url,
                title: a.title,
                root_cause: a.root_cause,
            })
        })
        .collect()
}

/// Where one of project / stage / service comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// This value, for every alert.
    Fixed(String),
    /// The first of these labels the alert has.
    Labels(Vec<String>),
}

/// How alerts map to project / stage / service: set per webhook URL with the
/// query parameters `project`, `stage`, `service` (a fixed value) or
/// `projectLabel`, `stageLabel`, `serviceLabel` (a label name). By default the
/// labels `keptn_project` or `project`, `keptn_stage` or `stage`,
/// `keptn_service` or `service`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    /// Project.
    pub project: Source,
    /// Stage.
    pub stage: Source,
    /// Service.
    pub service: Source,
}

impl Default for Mapping {
    fn default() -> Self {
        let l = |a: &str, b: &str| Source::Labels(vec![a.into(), b.into()]);
        Mapping {
            project: l("keptn_project", "project"),
            stage: l("keptn_stage", "stage"),
            service: l("keptn_service", "service"),
        }
    }
}

impl Mapping {
    /// From the webhook URL's query parameters.
    pub fn from_params(get: impl Fn(&str) -> Option<String>) -> Result<Mapping, CoreError> {
        let mut m = Mapping::default();
        for (what, slot) in [
            ("project", &mut m.project),
            ("stage", &mut m.stage),
            ("service", &mut m.service),
        ] {
            let fixed = get(what).filter(|v| !v.is_empty());
            let label = get(&format!("{what}Label")).filter(|v| !v.is_empty());
            *slot = match (fixed, label) {
                (Some(_), Some(_)) => {
                    return Err(CoreError::invalid(
                        what,
                        format!("give either {what} or {what}Label, not both"),
                    ))
                }
                (Some(v), None) => Source::Fixed(v),
                (None, Some(l)) => Source::Labels(vec![l]),
                (None, None) => slot.clone(),
            };
        }
        Ok(m)
    }

    /// The alert's project, stage and service, or why there is none.
    pub fn target(&self, a: &Alert) -> Result<Target, String> {
        let pick = |what: &str, s: &Source| match s {
            Source::Fixed(v) => Ok(v.clone()),
            Source::Labels(names) => names
                .iter()
                .find_map(|n| a.labels.get(n).filter(|v| !v.is_empty()).cloned())
                .ok_or_else(|| {
                    format!(
                        "no {what}: the alert has none of the labels {}",
                        names.join(", ")
                    )
                }),
        };
        Ok(Target {
            project: pick("project", &self.project)?,
            stage: pick("stage", &self.stage)?,
            service: pick("service", &self.service)?,
        })
    }
}

/// Project, stage and service of an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Project.
    pub project: String,
    /// Stage.
    pub stage: String,
    /// Service.
    pub service: String,
}

/// The keptn context of one alert instance (fingerprint + start).
pub fn alert_context(a: &Alert) -> String {
    ids::derive(&format!("alert/{}", a.fingerprint), &a.starts_at)
}

fn string_map(m: &BTreeMap<String, String>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

/// The `problem` of the remediation (Keptn's `ProblemDetails` names).
pub fn problem(a: &Alert, t: &Target) -> Value {
    json!({
        "problemTitle": a.title,
        "rootCause": a.root_cause,
        "ProblemID": a.fingerprint,
        "State": "OPEN",
        "ProblemURL": a.generator_url,
        "ImpactedEntity": t.service,
        "startsAt": a.starts_at,
        "labels": string_map(&a.labels),
        "annotations": string_map(&a.annotations),
    })
}

/// `sh.keptn.event.<stage>.remediation.triggered` for a firing alert, in the
/// alert's own context; its id derives from the context, so a repeated
/// notification would produce the same event.
pub fn remediation_trigger(a: &Alert, t: &Target, now: Timestamp) -> KeptnEvent {
    let ctx = alert_context(a);
    KeptnEvent::new(
        ids::derive(&ctx, "remediation.triggered"),
        SOURCE,
        sequence_type(&t.stage, "remediation", "triggered"),
        &ctx,
        json!({
            "project": t.project, "stage": t.stage, "service": t.service,
            "labels": string_map(&a.labels),
            "problem": problem(a, t),
        }),
        now,
    )
}

/// The audit record of one handled alert notification: what came in and
/// what Keelson did with it.
pub fn received(a: &Alert, target: Option<&Target>, outcome: &str, now: Timestamp) -> KeptnEvent {
    let mut d = Map::new();
    if let Some(t) = target {
        d.insert("project".into(), json!(t.project));
        d.insert("stage".into(), json!(t.stage));
        d.insert("service".into(), json!(t.service));
    }
    d.insert(
        "alert".into(),
        json!({"status": a.status, "fingerprint": a.fingerprint, "startsAt": a.starts_at,
               "title": a.title, "rootCause": a.root_cause,
               "labels": string_map(&a.labels), "annotations": string_map(&a.annotations),
               "url": a.generator_url}),
    );
    d.insert("outcome".into(), json!(outcome));
    let mut e = KeptnEvent::new(
        ids::random(),
        SOURCE,
        RECEIVED_TYPE.into(),
        &alert_context(a),
        Value::Object(d),
        now,
    );
    if e.to_json().len() > MAX_EVENT_BYTES {
        // The record must be storable whatever the alert carried.
        if let Some(alert) = e.data.get_mut("alert").and_then(Value::as_object_mut) {
            alert.remove("labels");
            alert.remove("annotations");
            alert.insert("truncated".into(), json!(true));
        }
    }
    e
}

/// Why a remediation trigger cannot be sent as an event, if it cannot: an
/// alert whose labels and annotations make it larger than an event may be.
pub fn too_large(trigger: &KeptnEvent) -> Option<String> {
    let n = trigger.to_json().len();
    (n > MAX_EVENT_BYTES).then(|| {
        format!(
            "the alert's labels and annotations make a {n}-byte event; an event may have {MAX_EVENT_BYTES} bytes"
        )
    })
}

/// A maintenance window: alerts for its project (and stage, and service, when
/// set) between `start` and `end` start no remediation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// Id (the resource name under [`MAINTENANCE_PREFIX`]).
    pub id: String,
    /// Project.
    pub project: String,
    /// Only this stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Only this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Start (inclusive).
    pub start: Timestamp,
    /// End (exclusive).
    pub end: Timestamp,
    /// Why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

impl Window {
    /// Whether the window silences an alert for `t` at `now`.
    pub fn silences(&self, t: &Target, now: Timestamp) -> bool {
        self.project == t.project
            && self.stage.as_ref().is_none_or(|s| *s == t.stage)
            && self.service.as_ref().is_none_or(|s| *s == t.service)
            && self.start.millis() <= now.millis()
            && now.millis() < self.end.millis()
    }

    /// The resource that holds it.
    pub fn uri(&self) -> String {
        format!("{MAINTENANCE_PREFIX}{}.json", self.id)
    }
}

/// A new window from the API's request body
/// `{"project", "stage"?, "service"?, "start"?, "end"? | "duration"?, "comment"?}`.
pub fn new_window(body: &Value, now: Timestamp) -> Result<Window, CoreError> {
    let s = |k: &str| -> Result<Option<String>, CoreError> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(v)) if v.trim().is_empty() => Ok(None),
            Some(Value::String(v)) => Ok(Some(v.trim().to_string())),
            Some(_) => Err(CoreError::invalid(k, "must be a string")),
        }
    };
    let time = |k: &str| -> Result<Option<Timestamp>, CoreError> {
        s(k)?
            .map(|v| {
                Timestamp::parse(&v).ok_or_else(|| {
                    CoreError::invalid(k, format!("cannot parse {v:?} as a time (RFC 3339)"))
                })
            })
            .transpose()
    };
    let project = s("project")?.ok_or_else(|| CoreError::invalid("project", "is required"))?;
    let start = time("start")?.unwrap_or(now);
    let end = match (time("end")?, s("duration")?) {
        (Some(_), Some(_)) => {
            return Err(CoreError::invalid(
                "end",
                "give either end or duration, not both",
            ))
        }
        (Some(e), None) => e,
        (None, Some(d)) => {
            let ms = crate::shipyard::parse_go_duration(&d)
                .map_err(|e| CoreError::invalid("duration", e.to_string()))?;
            start.plus(time::Duration::milliseconds(ms))
        }
        (None, None) => return Err(CoreError::invalid("end", "is required (or duration)")),
    };
    if end.millis() <= start.millis() {
        return Err(CoreError::invalid("end", "must be after start"));
    }
    Ok(Window {
        id: ids::random(),
        project,
        stage: s("stage")?,
        service: s("service")?,
        start,
        end,
        comment: s("comment")?.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alertmanager 0.25's body for a group of two alerts, as it sends it.
    const AM: &str = r#"{"receiver":"keelson","status":"firing","alerts":[
      {"status":"firing","labels":{"alertname":"HighLatency","keptn_project":"shop","keptn_stage":"production","keptn_service":"carts","severity":"page"},
       "annotations":{"summary":"p95 over 500 ms","rootCause":"Response time degradation"},
       "startsAt":"2026-12-02T10:00:00.000Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom/graph?g0.expr=x","fingerprint":"c5e9d37a1b5f0e2d"},
      {"status":"resolved","labels":{"alertname":"ErrorRate","project":"shop","stage":"production","service":"orders"},
       "annotations":{},"startsAt":"2026-12-02T09:00:00Z","endsAt":"2026-12-02T09:30:00Z","generatorURL":"","fingerprint":"0a1b2c3d4e5f6071"}],
      "groupLabels":{"alertname":"HighLatency"},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am:9093",
      "version":"4","groupKey":"{}:{alertname=\"HighLatency\"}","truncatedAlerts":0}"#;

    fn now() -> Timestamp {
        Timestamp::parse("2026-12-02T10:01:00Z").unwrap()
    }

    #[test]
    fn alertmanager_payloads_map_to_remediations() {
        let alerts = parse_alertmanager(AM.as_bytes()).unwrap();
        assert_eq!(alerts.len(), 2);
        let m = Mapping::default();
        let t = m.target(&alerts[0]).unwrap();
        assert_eq!(
            t,
            Target {
                project: "shop".into(),
                stage: "production".into(),
                service: "carts".into()
            }
        );
        assert_eq!(m.target(&alerts[1]).unwrap().service, "orders");
        let ev = remediation_trigger(&alerts[0], &t, now());
        assert_eq!(ev.ty, "sh.keptn.event.production.remediation.triggered");
        assert_eq!(ev.shkeptncontext, alert_context(&alerts[0]));
        assert_eq!(ev.data["problem"]["problemTitle"], "HighLatency");
        assert_eq!(ev.data["problem"]["rootCause"], "Response time degradation");
        assert_eq!(ev.data["problem"]["ProblemID"], "c5e9d37a1b5f0e2d");
        assert_eq!(
            ev.data["problem"]["annotations"]["summary"],
            "p95 over 500 ms"
        );
        assert_eq!(ev.data["labels"]["severity"], "page");
        assert_eq!(ev.data["service"], "carts");
        // The same instance always names the same context; a new firing does not.
        assert_eq!(remediation_trigger(&alerts[0], &t, now()).id, ev.id);
        let mut again = alerts[0].clone();
        again.starts_at = "2026-12-02T11:00:00Z".into();
        assert_ne!(alert_context(&again), ev.shkeptncontext);
    }

    #[test]
    fn the_mapping_is_configurable_per_webhook_url() {
        let a = &parse_alertmanager(AM.as_bytes()).unwrap()[0];
        let params = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let m = Mapping::from_params(params(&[("project", "ops"), ("serviceLabel", "alertname")]))
            .unwrap();
        let t = m.target(a).unwrap();
        assert_eq!(
            (t.project.as_str(), t.stage.as_str(), t.service.as_str()),
            ("ops", "production", "HighLatency")
        );
        let m = Mapping::from_params(params(&[("stageLabel", "env")])).unwrap();
        assert_eq!(
            m.target(a),
            Err("no stage: the alert has none of the labels env".into())
        );
        let e = Mapping::from_params(params(&[("stage", "x"), ("stageLabel", "env")])).unwrap_err();
        assert!(e.to_string().contains("either stage or stageLabel"), "{e}");
    }

    #[test]
    fn bad_payloads_name_the_field() {
        let cases: [(&str, &str); 5] = [
            ("not json", "body"),
            (r#"{"version":"3","alerts":[]}"#, "version"),
            (r#"{"alerts":[]}"#, "version"),
            (
                r#"{"version":"4","alerts":[{"status":"pending","fingerprint":"f"}]}"#,
                "alerts[0].status",
            ),
            (
                r#"{"version":"4","alerts":[{"status":"firing"}]}"#,
                "alerts[0].fingerprint",
            ),
        ];
        for (body, field) in cases {
            let e = parse_alertmanager(body.as_bytes()).unwrap_err();
            assert!(e.to_string().starts_with(field), "{body}: {e}");
        }
    }

    #[test]
    fn generic_alerts_have_a_documented_shape() {
        let body = br#"{"alerts":[{"id":"inc-42","status":"firing","title":"Disk full","rootCause":"disk",
            "project":"shop","stage":"production","service":"db","labels":{"team":"data"},"url":"https://pager/inc-42"}]}"#;
        let a = &parse_generic(body).unwrap()[0];
        let t = Mapping::default().target(a).unwrap();
        assert_eq!(t.service, "db");
        let ev = remediation_trigger(a, &t, now());
        assert_eq!(ev.data["problem"]["problemTitle"], "Disk full");
        assert_eq!(ev.data["problem"]["rootCause"], "disk");
        assert_eq!(ev.data["problem"]["ProblemURL"], "https://pager/inc-42");
        assert_eq!(ev.data["labels"]["team"], "data");
        let e = parse_generic(
            br#"{"alerts":[{"id":"x","status":"firing","title":"t","colour":"red"}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e =
            parse_generic(br#"{"alerts":[{"id":" ","status":"firing","title":"t"}]}"#).unwrap_err();
        assert!(e.to_string().starts_with("alerts[0].id"), "{e}");
    }

    #[test]
    fn oversized_alerts_are_refused_and_their_record_is_trimmed() {
        let mut a = parse_alertmanager(AM.as_bytes()).unwrap().remove(0);
        let t = Mapping::default().target(&a).unwrap();
        assert_eq!(too_large(&remediation_trigger(&a, &t, now())), None);
        a.annotations
            .insert("description".into(), "x".repeat(70_000));
        let why = too_large(&remediation_trigger(&a, &t, now())).unwrap();
        assert!(why.contains("an event may have 65536 bytes"), "{why}");
        let rec = received(&a, Some(&t), "ignored", now());
        assert!(rec.to_json().len() <= MAX_EVENT_BYTES);
        assert_eq!(rec.data["alert"]["truncated"], true);
        assert_eq!(rec.data["alert"]["fingerprint"], "c5e9d37a1b5f0e2d");
    }

    #[test]
    fn maintenance_windows_silence_their_scope_and_time() {
        let w = new_window(&json!({"project": "shop", "stage": "production", "duration": "2h", "comment": "db upgrade"}), now()).unwrap();
        assert_eq!(w.end.millis() - w.start.millis(), 2 * 3600 * 1000);
        let t = |stage: &str, service: &str| Target {
            project: "shop".into(),
            stage: stage.into(),
            service: service.into(),
        };
        assert!(w.silences(&t("production", "carts"), now()));
        assert!(!w.silences(&t("staging", "carts"), now()));
        assert!(!w.silences(
            &Target {
                project: "other".into(),
                ..t("production", "carts")
            },
            now()
        ));
        assert!(!w.silences(
            &t("production", "carts"),
            Timestamp::from_millis(w.end.millis())
        ));
        assert!(!w.silences(
            &t("production", "carts"),
            Timestamp::from_millis(w.start.millis() - 1)
        ));
        let s = new_window(&json!({"project": "shop", "service": "carts", "start": "2026-12-02T10:00:00Z", "end": "2026-12-02T11:00:00Z"}), now()).unwrap();
        assert!(s.silences(&t("production", "carts"), now()));
        assert!(!s.silences(&t("production", "orders"), now()));
        for (body, field) in [
            (json!({"end": "2026-12-02T11:00:00Z"}), "project"),
            (json!({"project": "shop"}), "end"),
            (json!({"project": "shop", "duration": "soon"}), "duration"),
            (
                json!({"project": "shop", "end": "2026-12-02T09:00:00Z"}),
                "end",
            ),
            (json!({"project": "shop", "end": "yesterday"}), "end"),
            (
                json!({"project": "shop", "duration": "1h", "end": "2026-12-02T11:00:00Z"}),
                "end",
            ),
            (json!({"project": 7, "duration": "1h"}), "project"),
        ] {
            let e = new_window(&body, now()).unwrap_err();
            assert!(e.to_string().starts_with(field), "{body}: {e}");
        }
    }
}
