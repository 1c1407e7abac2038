//! Lighthouse's answer to `get-sli.finished`: the `data` of its
//! `evaluation.finished` (§4.1 step 6, §4.7).

use super::go_json::{field, number, Decoder};
use super::previous::select_previous_refs;
use super::score::evaluate_selected;
use super::{parse, EvaluationError, IndicatorValue, PreviousEvaluation, SloInput};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The lighthouse decision on a `get-sli.finished`.
///
/// `get_sli` is that event's `data` (`project`, `stage`, `service`, `labels`,
/// `status`, `result`, `message`, `get-sli: {start, end, indicatorValues}`);
/// `slo` is what reading `slo.yaml` gave; `previous` are candidate
/// `evaluation.finished` events, newest first, already free of invalidated
/// ones (the SLO's comparison settings are applied here, so more may be
/// passed than are needed).
///
/// Returns the complete `data` of the `evaluation.finished`, in Keptn's shape:
/// `project`, `stage`, `service`, `labels`, `status`, `result`, `message`
/// (each omitted when empty) and `evaluation: {timeStart, timeEnd, result,
/// score, sloFileContent, indicatorResults, comparedEvents}`. In order:
///
/// - `data` that does not decode as Keptn's `GetSLIFinishedEventData` →
///   errored, `Could not parse event payload: …`;
/// - `status: aborted` → errored, `evaluation performed by lighthouse was
///   aborted`; `status: errored` → errored, `evaluation performed by lighthouse
///   received an unexpected error: <message>` (both with `evaluation.result`
///   still `pass`, as Keptn leaves it);
/// - no (or an empty) `slo.yaml` → succeeded/pass, score 0, `no evaluation
///   performed by lighthouse because no SLO file configured for project <p>`;
/// - an unreadable or unparseable one → errored, with the error (Keptn's
///   `Could not parse SLO file for service <s> in stage <st> in project <p>`
///   for parse errors) and the content base64-encoded;
/// - an unparseable pass criterion → succeeded but failed, `error with <name>: …`;
/// - a missing or unparseable `total_score` → errored;
/// - otherwise the evaluation; a `get-sli.finished` with `result: fail` turns
///   the event's result into `fail` with `lighthouse failed because SLI failed
///   with message <message>` while `evaluation.result` and `score` stay.
pub fn evaluation_finished_data(
    get_sli: &Value,
    slo: SloInput<'_>,
    previous: &[PreviousEvaluation],
) -> Value {
    let (sli, decode_error) = GetSliFinished::decode(get_sli);
    if let Some(e) = decode_error {
        return sli.errored(format!("Could not parse event payload: {e}"), "");
    }
    if sli.status == "aborted" {
        return sli.render(Answer {
            status: "errored",
            message: "evaluation performed by lighthouse was aborted".into(),
            ..Answer::not_evaluated()
        });
    }
    if sli.status == "errored" {
        return sli.render(Answer {
            status: "errored",
            message: format!(
                "evaluation performed by lighthouse received an unexpected error: {}",
                sli.message
            ),
            ..Answer::not_evaluated()
        });
    }
    let (text, given) = match slo {
        SloInput::Missing | SloInput::Text("") | SloInput::Parsed { text: "", .. } => {
            return sli.render(Answer {
                result: "pass",
                message: format!(
                    "no evaluation performed by lighthouse because no SLO file configured for project {}",
                    sli.project
                ),
                ..Answer::not_evaluated()
            });
        }
        SloInput::Unreadable { error, raw } => return sli.errored(error, &base64(raw)),
        SloInput::Text(text) => (text, None),
        SloInput::Parsed { text, slo } => (text, Some(slo)),
    };
    let content = base64(text.as_bytes());
    let owned;
    let parsed = match given {
        Some(p) => p,
        None => match parse(text) {
            Ok(p) => {
                owned = p;
                &owned
            }
            Err(_) => {
                let message = format!(
                    "Could not parse SLO file for service {} in stage {} in project {}",
                    sli.service, sli.stage, sli.project
                );
                return sli.errored(message, &content);
            }
        },
    };
    let selected = select_previous_refs(&parsed.comparison, previous);
    // Events given as bare `data` have no id to report.
    let compared_events: Vec<String> = selected
        .iter()
        .map(|p| p.id.clone())
        .filter(|id| !id.is_empty())
        .collect();
    match evaluate_selected(parsed, sli.indicator_values.clone(), &selected) {
        Err(EvaluationError::PassCriterion(e)) => sli.render(Answer {
            status: "succeeded",
            result: "fail",
            message: e.to_string(),
            evaluation_result: "fail",
            score: 0.0,
            slo_file_content: content,
            indicator_results: Value::Null,
            compared_events,
        }),
        Err(EvaluationError::TotalScore(e)) => sli.errored(e.to_string(), &content),
        Ok(ev) => {
            let (result, message) = if !parsed.objectives.is_empty() && sli.result == "fail" {
                (
                    "fail",
                    format!(
                        "lighthouse failed because SLI failed with message {}",
                        sli.message
                    ),
                )
            } else {
                (ev.event_result.as_str(), ev.message)
            };
            let indicator_results = if ev.indicator_results.is_empty() {
                Value::Null
            } else {
                serde_json::to_value(&ev.indicator_results).unwrap_or(Value::Null)
            };
            sli.render(Answer {
                status: "succeeded",
                result,
                message,
                evaluation_result: ev.result.as_str(),
                score: ev.score,
                slo_file_content: content,
                indicator_results,
                compared_events,
            })
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Keptn's `GetSLIFinishedEventData`, decoded with Go's rules.
#[derive(Debug, Default)]
struct GetSliFinished {
    project: String,
    stage: String,
    service: String,
    labels: BTreeMap<String, String>,
    status: String,
    result: String,
    message: String,
    start: String,
    end: String,
    indicator_values: Vec<IndicatorValue>,
}

impl GetSliFinished {
    /// The decoded data, and the first type error (Go decodes what it can
    /// and still reports the error).
    fn decode(v: &Value) -> (GetSliFinished, Option<String>) {
        let mut d = Decoder::default();
        let mut out = GetSliFinished::default();
        if let Some(obj) = d.object(Some(v), "data", "GetSLIFinishedEventData") {
            out.project = d.string(field(obj, "project"), "project");
            out.stage = d.string(field(obj, "stage"), "stage");
            out.service = d.string(field(obj, "service"), "service");
            out.labels = d.string_map(field(obj, "labels"), "labels");
            out.status = d.string(field(obj, "status"), "status");
            out.result = d.string(field(obj, "result"), "result");
            out.message = d.string(field(obj, "message"), "message");
            if let Some(g) = d.object(field(obj, "get-sli"), "get-sli", "GetSLIFinished") {
                out.start = d.string(field(g, "start"), "get-sli.start");
                out.end = d.string(field(g, "end"), "get-sli.end");
                let values = d.array(
                    field(g, "indicatorValues"),
                    "get-sli.indicatorValues",
                    "[]*SLIResult",
                );
                for (i, v) in values.iter().enumerate() {
                    // A null value would crash Keptn; it is ignored here.
                    if let Some(v) =
                        d.indicator_value(v, format_args!("get-sli.indicatorValues[{i}]"))
                    {
                        out.indicator_values.push(v);
                    }
                }
            }
        }
        (out, d.into_error())
    }

    fn errored(&self, message: String, slo_file_content: &str) -> Value {
        self.render(Answer {
            status: "errored",
            result: "fail",
            message,
            evaluation_result: "fail",
            slo_file_content: slo_file_content.into(),
            ..Answer::not_evaluated()
        })
    }

    fn render(&self, a: Answer) -> Value {
        let mut data = Map::new();
        let mut put = |k: &str, v: &str| {
            if !v.is_empty() {
                data.insert(k.into(), Value::String(v.into()));
            }
        };
        put("project", &self.project);
        put("stage", &self.stage);
        put("service", &self.service);
        put("status", a.status);
        put("result", a.result);
        put("message", &a.message);
        if !self.labels.is_empty() {
            data.insert("labels".into(), json!(self.labels));
        }
        let mut evaluation = Map::new();
        evaluation.insert("timeStart".into(), json!(self.start));
        evaluation.insert("timeEnd".into(), json!(self.end));
        evaluation.insert("result".into(), json!(a.evaluation_result));
        evaluation.insert("score".into(), number(a.score));
        evaluation.insert("sloFileContent".into(), json!(a.slo_file_content));
        evaluation.insert("indicatorResults".into(), a.indicator_results);
        if !a.compared_events.is_empty() {
            evaluation.insert("comparedEvents".into(), json!(a.compared_events));
        }
        data.insert("evaluation".into(), Value::Object(evaluation));
        Value::Object(data)
    }
}

/// What goes into the rendered `data` besides the copied `get-sli` fields.
struct Answer {
    status: &'static str,
    result: &'static str,
    message: String,
    evaluation_result: &'static str,
    score: f64,
    slo_file_content: String,
    indicator_results: Value,
    compared_events: Vec<String>,
}

impl Answer {
    /// Keptn's starting point: succeeded, `evaluation.result: pass`, score 0,
    /// no indicators; the early answers change only what they must.
    fn not_evaluated() -> Answer {
        Answer {
            status: "succeeded",
            result: "fail",
            message: String::new(),
            evaluation_result: "pass",
            score: 0.0,
            slo_file_content: String::new(),
            indicator_results: Value::Null,
            compared_events: vec![],
        }
    }
}
