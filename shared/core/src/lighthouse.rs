//! The lighthouse's decisions around the scoring (spec §4.1): the evaluation
//! window, what `evaluation.triggered` answers, and which trigger a
//! `get-sli.finished` belongs to. The scoring itself is [`crate::slo`].

use crate::error::CoreError;
use crate::event::{task_type, KeptnEvent};
use crate::ids;
use crate::shipyard::parse_go_duration;
use crate::timestamp::Timestamp;
use serde_json::{json, Map, Value};

/// `source` of every event the lighthouse emits (Keptn's service name, so
/// tools that filter on it keep working).
pub const SOURCE: &str = "lighthouse-service";

/// Keptn's default evaluation window.
const DEFAULT_TIMEFRAME_MS: i64 = 5 * 60 * 1000;

fn opt(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// Keptn's evaluation window rules (go-utils `GetStartEndTime`, used by the
/// REST evaluation trigger and by the lighthouse): default timeframe `5m`
/// ending now; `start` + `timeframe`; `end` needs `start`; `end` and
/// `timeframe` exclude each other; the window must be at least one minute.
/// Errors name the field as `evaluation`.
pub fn resolve_window(
    start: Option<&str>,
    end: Option<&str>,
    timeframe: Option<&str>,
    now: Timestamp,
) -> Result<(Timestamp, Timestamp), CoreError> {
    let bad = |m: String| CoreError::invalid("evaluation", m);
    let (start, end, timeframe) = (opt(start), opt(end), opt(timeframe));
    if start.is_some() && end.is_none() && timeframe.is_none() {
        return Err(bad("no timeframe or end date provided".into()));
    }
    if end.is_some() && timeframe.is_some() {
        return Err(bad("'end' and 'timeframe' are mutually exclusive".into()));
    }
    if end.is_some() && start.is_none() {
        return Err(bad("start date is required when using an end date".into()));
    }
    let frame = match timeframe {
        Some(t) => parse_go_duration(t)
            .map_err(|e| bad(format!("could not parse provided timeframe: {e}")))?,
        None => DEFAULT_TIMEFRAME_MS,
    };
    let parse = |field: &str, v: &str| {
        Timestamp::parse(v).ok_or_else(|| {
            CoreError::invalid(
                field,
                format!("cannot parse {v:?} as a time (RFC 3339 or 2006-01-02T15:04:05)"),
            )
        })
    };
    let (s, e) = match (start, end) {
        (Some(s), Some(e)) => (parse("start", s)?, parse("end", e)?),
        (Some(s), None) => {
            let s = parse("start", s)?;
            (s, Timestamp::from_millis(s.millis().saturating_add(frame)))
        }
        _ => (
            Timestamp::from_millis(now.millis().saturating_sub(frame)),
            now,
        ),
    };
    if e.millis().saturating_sub(s.millis()) < 60_000 {
        return Err(bad(
            "end date must be at least 1 minute after start date".into()
        ));
    }
    Ok((s, e))
}

/// What the lighthouse found when it read the service's `slo.yaml` for a trigger.
#[derive(Debug, Clone, PartialEq)]
pub enum SloAtTrigger {
    /// No file: the SLI provider is asked for nothing (Keptn goes on).
    Missing,
    /// The file could not be read or parsed.
    Unreadable(String),
    /// The objectives' SLI names in SLO order and the SLO's `filter`.
    Found {
        /// `indicators` of `get-sli.triggered`.
        indicators: Vec<String>,
        /// `customFilters` of `get-sli.triggered`.
        filters: Vec<(String, String)>,
    },
}

fn common_data(data: &Value) -> Map<String, Value> {
    crate::event::reply_data(data)
}

fn answer(
    trigger: &KeptnEvent,
    ty: &str,
    purpose: &str,
    data: Value,
    now: Timestamp,
) -> KeptnEvent {
    trigger.reply(SOURCE, ty.into(), purpose, data, now)
}

/// An `evaluation.finished` (errored or not scored) answering `trigger`.
fn finished_without_score(
    trigger: &KeptnEvent,
    window: (&str, &str),
    status: &str,
    result: &str,
    message: String,
    now: Timestamp,
) -> KeptnEvent {
    let mut d = common_data(&trigger.data);
    d.insert("status".into(), json!(status));
    d.insert("result".into(), json!(result));
    d.insert("message".into(), json!(message));
    d.insert(
        "evaluation".into(),
        json!({
            "timeStart": window.0,
            "timeEnd": window.1,
            "result": result,
            "score": 0,
            "sloFileContent": "",
            "indicatorResults": null,
        }),
    );
    answer(
        trigger,
        &task_type("evaluation", "finished"),
        "evaluation.finished",
        Value::Object(d),
        now,
    )
}

/// The id of the `get-sli.triggered` the lighthouse sends for `trigger`; the
/// provider's `get-sli.finished` names it as `triggeredid`, which is how the
/// answer finds its evaluation again.
pub fn get_sli_id(evaluation_triggered_id: &str) -> String {
    ids::derive(evaluation_triggered_id, "get-sli.triggered")
}

/// The events answering `evaluation.triggered` (§4.1 steps 1–4):
/// `evaluation.started`, then either `get-sli.triggered` to `sli_provider`, or
/// an `evaluation.finished` that explains why nothing was evaluated. Ids are
/// derived from the trigger's, so a redelivered trigger re-emits the same events.
pub fn on_evaluation_triggered(
    trigger: &KeptnEvent,
    slo: &SloAtTrigger,
    sli_provider: Option<&str>,
    now: Timestamp,
) -> Vec<KeptnEvent> {
    let data = &trigger.data;
    let mut started = common_data(data);
    started.insert("status".into(), json!("succeeded"));
    let started = answer(
        trigger,
        &task_type("evaluation", "started"),
        "evaluation.started",
        Value::Object(started),
        now,
    );
    let s = |p: &str| data.pointer(p).and_then(Value::as_str);
    // Keptn: an explicit evaluation window (start+end or timeframe) follows the
    // REST rules; otherwise the test window is taken verbatim.
    let window = if (opt(s("/evaluation/start")).is_some() && opt(s("/evaluation/end")).is_some())
        || opt(s("/evaluation/timeframe")).is_some()
    {
        resolve_window(
            s("/evaluation/start"),
            s("/evaluation/end"),
            s("/evaluation/timeframe"),
            now,
        )
        .map(|(a, b)| (a.to_rfc3339(), b.to_rfc3339()))
        .map_err(|e| match e {
            CoreError::Invalid { reason, .. } => reason,
        })
    } else if let (Some(a), Some(b)) = (opt(s("/test/start")), opt(s("/test/end"))) {
        Ok((a.to_string(), b.to_string()))
    } else {
        Err("evaluation.triggered event does not contain evaluation timeframe".to_string())
    };
    let (start, end) = match window {
        Ok(w) => w,
        Err(msg) => {
            return vec![
                started,
                finished_without_score(trigger, ("", ""), "errored", "fail", msg, now),
            ]
        }
    };
    let (indicators, filters) = match slo {
        SloAtTrigger::Missing => (vec![], vec![]),
        SloAtTrigger::Unreadable(e) => {
            let f = finished_without_score(
                trigger,
                (&start, &end),
                "errored",
                "fail",
                format!("error retrieving SLO file: {e}"),
                now,
            );
            return vec![started, f];
        }
        SloAtTrigger::Found {
            indicators,
            filters,
        } => (indicators.clone(), filters.clone()),
    };
    let Some(provider) = sli_provider.map(str::trim).filter(|p| !p.is_empty()) else {
        let project = trigger.project().unwrap_or_default();
        let f = finished_without_score(
            trigger,
            (&start, &end),
            "succeeded",
            "pass",
            format!(
                "no evaluation performed by lighthouse because no SLI-provider configured for project {project}"
            ),
            now,
        );
        return vec![started, f];
    };
    let mut d = common_data(data);
    d.insert(
        "get-sli".into(),
        json!({
            "sliProvider": provider,
            "start": start,
            "end": end,
            "indicators": indicators,
            "customFilters": filters
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect::<Vec<_>>(),
        }),
    );
    if let Some(dep) = data
        .pointer("/deployment/deploymentNames/0")
        .and_then(Value::as_str)
    {
        d.insert("deployment".into(), json!(dep));
    }
    let mut get_sli = KeptnEvent::new(
        get_sli_id(&trigger.id),
        SOURCE,
        task_type("get-sli", "triggered"),
        &trigger.shkeptncontext,
        Value::Object(d),
        now,
    );
    get_sli.gitcommitid = trigger.gitcommitid.clone();
    vec![started, get_sli]
}

/// The `evaluation.triggered` a `get-sli.finished` answers, among the
/// candidates of its context, stage and service (newest first): the one whose
/// `get-sli.triggered` it names, else (a provider answering a request Keelson
/// did not send, as Keptn allowed) the newest.
pub fn pick_trigger<'a>(
    candidates: &'a [KeptnEvent],
    get_sli_finished: &KeptnEvent,
) -> Option<&'a KeptnEvent> {
    let named = get_sli_finished.triggeredid.as_deref();
    candidates
        .iter()
        .find(|c| Some(get_sli_id(&c.id).as_str()) == named)
        .or_else(|| candidates.first())
}

/// `evaluation.finished` answering `trigger` with `data` (from
/// [`crate::slo::evaluation_finished_data`]); the commit id is the one the
/// SLO was read at (echoed from `get-sli.finished`).
pub fn evaluation_finished(
    trigger: &KeptnEvent,
    data: Value,
    gitcommitid: Option<String>,
    now: Timestamp,
) -> KeptnEvent {
    let mut e = answer(
        trigger,
        &task_type("evaluation", "finished"),
        "evaluation.finished",
        data,
        now,
    );
    e.gitcommitid = gitcommitid.or_else(|| trigger.gitcommitid.clone());
    e
}

/// An `evaluation.finished` when the trigger of a `get-sli.finished` cannot be
/// found (Keptn answers with an errored event in the same context).
pub fn orphan_get_sli_finished(get_sli_finished: &KeptnEvent, now: Timestamp) -> KeptnEvent {
    let mut d = common_data(&get_sli_finished.data);
    d.insert("status".into(), json!("errored"));
    d.insert("result".into(), json!("fail"));
    d.insert(
        "message".into(),
        json!("could not find the evaluation.triggered event of this get-sli.finished event"),
    );
    let mut e = KeptnEvent::new(
        ids::derive(&get_sli_finished.id, "evaluation.finished"),
        SOURCE,
        task_type("evaluation", "finished"),
        &get_sli_finished.shkeptncontext,
        Value::Object(d),
        now,
    );
    e.gitcommitid = get_sli_finished.gitcommitid.clone();
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::parse("2026-01-01T12:00:00Z").unwrap()
    }

    #[test]
    fn evaluation_window_follows_keptns_rules_and_messages() {
        let t = |s: &str| Timestamp::parse(s).unwrap();
        let w = |s: Option<&str>, e: Option<&str>, f: Option<&str>| resolve_window(s, e, f, now());
        assert_eq!(
            w(None, None, None).unwrap(),
            (t("2026-01-01T11:55:00Z"), now()),
            "default: 5 minutes ending now"
        );
        assert_eq!(
            w(None, None, Some("1h")).unwrap(),
            (t("2026-01-01T11:00:00Z"), now())
        );
        assert_eq!(
            w(Some("2026-01-01T10:00:00Z"), None, Some("10m")).unwrap(),
            (t("2026-01-01T10:00:00Z"), t("2026-01-01T10:10:00Z"))
        );
        assert_eq!(
            w(
                Some("2026-01-01T10:00:00"),
                Some("2026-01-01T10:02:00.000Z"),
                None
            )
            .unwrap(),
            (t("2026-01-01T10:00:00Z"), t("2026-01-01T10:02:00Z")),
            "Keptn's user-friendly format without offset is UTC"
        );
        let errors = [
            (Some("2026-01-01T10:00:00Z"), None, None, "no timeframe or end date provided"),
            (
                Some("2026-01-01T10:00:00Z"),
                Some("2026-01-01T11:00:00Z"),
                Some("5m"),
                "'end' and 'timeframe' are mutually exclusive",
            ),
            (None, Some("2026-01-01T11:00:00Z"), None, "start date is required when using an end date"),
            (
                Some("2026-01-01T10:00:00Z"),
                Some("2026-01-01T10:00:59Z"),
                None,
                "end date must be at least 1 minute after start date",
            ),
            (
                Some("2026-01-01T10:00:00Z"),
                Some("2026-01-01T09:00:00Z"),
                None,
                "end date must be at least 1 minute after start date",
            ),
            (None, None, Some("5x"), "could not parse provided timeframe: \"5x\" is not a duration (examples: 30s, 10m, 1h30m)"),
        ];
        for (s, e, f, msg) in errors {
            let err = w(s, e, f).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("evaluation: {msg}"),
                "{s:?} {e:?} {f:?}"
            );
        }
        let err = w(Some("yesterday"), None, Some("5m")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("start: cannot parse \"yesterday\""),
            "{err}"
        );
    }

    fn trigger(data: Value) -> KeptnEvent {
        let mut e = KeptnEvent::new(
            "trig-1".into(),
            "shipyard-controller",
            "sh.keptn.event.evaluation.triggered".into(),
            "ctx-1",
            data,
            now(),
        );
        e.gitcommitid = Some("c0ffee".into());
        e
    }

    fn base() -> Value {
        json!({"project": "sockshop", "stage": "staging", "service": "carts",
               "labels": {"build": "7"},
               "test": {"start": "2026-01-01T11:50:00.000Z", "end": "2026-01-01T11:55:00.000Z"},
               "deployment": {"deploymentNames": ["canary", "primary"]}})
    }

    #[test]
    fn triggered_evaluation_asks_the_configured_provider_for_the_slo_indicators() {
        let t = trigger(base());
        let slo = SloAtTrigger::Found {
            indicators: vec!["response_time_p95".into(), "error_rate".into()],
            filters: vec![("handler".into(), "ItemsController".into())],
        };
        let out = on_evaluation_triggered(&t, &slo, Some("prometheus"), now());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].ty, "sh.keptn.event.evaluation.started");
        assert_eq!(out[0].triggeredid.as_deref(), Some("trig-1"));
        assert_eq!(
            out[0].data,
            json!({"project": "sockshop", "stage": "staging", "service": "carts",
                   "labels": {"build": "7"}, "status": "succeeded"})
        );
        let g = &out[1];
        assert_eq!(g.ty, "sh.keptn.event.get-sli.triggered");
        assert_eq!(g.id, get_sli_id("trig-1"));
        assert_eq!(g.triggeredid, None, "task triggers carry no triggeredid");
        assert_eq!(g.gitcommitid.as_deref(), Some("c0ffee"));
        assert_eq!(g.source, SOURCE);
        assert_eq!(
            g.data,
            json!({"project": "sockshop", "stage": "staging", "service": "carts",
                   "labels": {"build": "7"}, "deployment": "canary",
                   "get-sli": {"sliProvider": "prometheus",
                               "start": "2026-01-01T11:50:00.000Z", "end": "2026-01-01T11:55:00.000Z",
                               "indicators": ["response_time_p95", "error_rate"],
                               "customFilters": [{"key": "handler", "value": "ItemsController"}]}})
        );
        assert_eq!(
            on_evaluation_triggered(&t, &slo, Some("prometheus"), now()),
            out,
            "a redelivered trigger re-emits the same events"
        );
    }

    #[test]
    fn explicit_evaluation_window_wins_over_the_test_window() {
        let mut d = base();
        d["evaluation"] = json!({"start": "2026-01-01T10:00:00Z", "timeframe": "2m"});
        let out = on_evaluation_triggered(&trigger(d), &SloAtTrigger::Missing, Some("p"), now());
        assert_eq!(out[1].data["get-sli"]["start"], "2026-01-01T10:00:00.000Z");
        assert_eq!(out[1].data["get-sli"]["end"], "2026-01-01T10:02:00.000Z");
        assert_eq!(
            out[1].data["get-sli"]["indicators"],
            json!([]),
            "no SLO: no indicators"
        );
    }

    #[test]
    fn triggered_evaluation_error_paths_answer_with_keptns_messages() {
        let finished = |data: Value, slo: SloAtTrigger, provider: Option<&str>| {
            let out = on_evaluation_triggered(&trigger(data), &slo, provider, now());
            assert_eq!(out.len(), 2);
            assert_eq!(out[0].ty, "sh.keptn.event.evaluation.started");
            let f = out[1].clone();
            assert_eq!(f.ty, "sh.keptn.event.evaluation.finished");
            assert_eq!(f.triggeredid.as_deref(), Some("trig-1"));
            f
        };
        let mut no_window = base();
        no_window.as_object_mut().unwrap().remove("test");
        let f = finished(no_window, SloAtTrigger::Missing, Some("p"));
        assert_eq!(
            (
                f.data["status"].as_str(),
                f.data["result"].as_str(),
                f.data["message"].as_str()
            ),
            (
                Some("errored"),
                Some("fail"),
                Some("evaluation.triggered event does not contain evaluation timeframe")
            )
        );
        assert_eq!(f.data["evaluation"]["result"], "fail");

        let f = finished(
            base(),
            SloAtTrigger::Unreadable("bad indentation".into()),
            Some("p"),
        );
        assert_eq!(f.data["status"], "errored");
        assert_eq!(
            f.data["message"],
            "error retrieving SLO file: bad indentation"
        );
        assert_eq!(
            f.data["evaluation"]["timeStart"],
            "2026-01-01T11:50:00.000Z"
        );

        for provider in [None, Some(""), Some("  ")] {
            let f = finished(base(), SloAtTrigger::Missing, provider);
            assert_eq!(f.data["status"], "succeeded");
            assert_eq!(f.data["result"], "pass");
            assert_eq!(f.data["evaluation"]["result"], "pass");
            assert_eq!(f.data["evaluation"]["score"], 0);
            assert_eq!(
                f.data["message"],
                "no evaluation performed by lighthouse because no SLI-provider configured for project sockshop"
            );
        }

        let mut bad_window = base();
        bad_window["evaluation"] = json!({"timeframe": "soon"});
        let f = finished(bad_window, SloAtTrigger::Missing, Some("p"));
        assert_eq!(
            f.data["message"],
            "could not parse provided timeframe: \"soon\" is not a duration (examples: 30s, 10m, 1h30m)"
        );
    }

    #[test]
    fn get_sli_finished_finds_the_evaluation_that_asked_for_it() {
        let a = trigger(base());
        let mut b = trigger(base());
        b.id = "trig-2".into();
        let candidates = vec![b.clone(), a.clone()];
        let mut answer = KeptnEvent::new(
            "f".into(),
            "prometheus",
            "sh.keptn.event.get-sli.finished".into(),
            "ctx-1",
            json!({}),
            now(),
        );
        answer.triggeredid = Some(get_sli_id("trig-1"));
        assert_eq!(pick_trigger(&candidates, &answer).unwrap().id, "trig-1");
        answer.triggeredid = Some("someone-else".into());
        assert_eq!(
            pick_trigger(&candidates, &answer).unwrap().id,
            "trig-2",
            "newest"
        );
        assert!(pick_trigger(&[], &answer).is_none());
    }
}
