//! Previous `evaluation.finished` events as comparison input (§4.6).

use super::go_json::{field, Decoder};
use super::{Comparison, PreviousEvaluation, PreviousIndicator, SloError};
use serde_json::{Map, Value};

impl PreviousEvaluation {
    /// Reads one stored event: an `evaluation.finished` CloudEvent (an object
    /// with `data` and `id`) or just its `data` (the id is then empty).
    /// `data` is checked against Keptn's `EvaluationFinishedEventData` with
    /// Go's JSON rules; Keptn silently skips events that fail this check, so
    /// callers wanting exactly that use this with `filter_map(.. .ok())`.
    pub fn from_value(v: &Value) -> Result<PreviousEvaluation, SloError> {
        let Value::Object(obj) = v else {
            return Err(SloError::new("is not a JSON object"));
        };
        let (id, data) = if obj.contains_key("data") && obj.contains_key("id") {
            let id = match obj.get("id") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) => String::new(),
                _ => return Err(SloError::new("id is not a string")),
            };
            (id, obj.get("data").unwrap_or(&Value::Null))
        } else {
            (String::new(), v)
        };
        let mut d = Decoder::default();
        let data = d.object(Some(data), "data", "EvaluationFinishedEventData");
        let evaluation = decode(&mut d, data);
        match d.into_error() {
            Some(e) => Err(SloError::new(e)),
            None => Ok(PreviousEvaluation { id, ..evaluation }),
        }
    }
}

/// Every field of Keptn's `EvaluationFinishedEventData` is type-checked, not
/// only those compared with, because Go rejects the whole event on any
/// mismatch.
fn decode(d: &mut Decoder, data: Option<&Map<String, Value>>) -> PreviousEvaluation {
    let Some(data) = data else {
        return PreviousEvaluation::default();
    };
    for key in ["project", "stage", "service", "status", "message"] {
        d.string(field(data, key), format_args!("data.{key}"));
    }
    d.string_map(field(data, "labels"), "data.labels");
    let result = d.string(field(data, "result"), "data.result");
    let mut indicator_results = vec![];
    if let Some(ev) = d.object(
        field(data, "evaluation"),
        "data.evaluation",
        "EvaluationDetails",
    ) {
        for key in ["timeStart", "timeEnd", "result", "sloFileContent"] {
            d.string(field(ev, key), format_args!("data.evaluation.{key}"));
        }
        d.float(field(ev, "score"), "data.evaluation.score");
        for (i, e) in d
            .array(
                field(ev, "comparedEvents"),
                "data.evaluation.comparedEvents",
                "[]string",
            )
            .iter()
            .enumerate()
        {
            d.string(Some(e), format_args!("data.evaluation.comparedEvents[{i}]"));
        }
        let results = d.array(
            field(ev, "indicatorResults"),
            "data.evaluation.indicatorResults",
            "[]*SLIEvaluationResult",
        );
        for (i, r) in results.iter().enumerate() {
            let path = format!("data.evaluation.indicatorResults[{i}]");
            // A null entry would crash Keptn; it is simply not compared with.
            if let Some(r) = d.object(Some(r), &path, "SLIEvaluationResult") {
                indicator_results.push(indicator(d, r, &path));
            }
        }
    }
    PreviousEvaluation {
        id: String::new(),
        result,
        indicator_results,
    }
}

fn indicator(d: &mut Decoder, r: &Map<String, Value>, path: &str) -> PreviousIndicator {
    d.float(field(r, "score"), format_args!("{path}.score"));
    d.string(field(r, "displayName"), format_args!("{path}.displayName"));
    d.string(field(r, "status"), format_args!("{path}.status"));
    d.boolean(field(r, "keySli"), format_args!("{path}.keySli"));
    for targets in ["passTargets", "warningTargets"] {
        let tpath = format!("{path}.{targets}");
        for (i, t) in d
            .array(field(r, targets), &tpath, "[]*SLITarget")
            .iter()
            .enumerate()
        {
            let tpath = format!("{tpath}[{i}]");
            if let Some(t) = d.object(Some(t), &tpath, "SLITarget") {
                d.string(field(t, "criteria"), format_args!("{tpath}.criteria"));
                d.float(field(t, "targetValue"), format_args!("{tpath}.targetValue"));
                d.boolean(field(t, "violated"), format_args!("{tpath}.violated"));
            }
        }
    }
    let value = match field(r, "value") {
        None | Some(Value::Null) => None,
        Some(v) => d.indicator_value(v, format_args!("{path}.value")),
    };
    PreviousIndicator { value }
}

/// Reads stored `evaluation.finished` events (newest first), each a
/// CloudEvent or its `data`. The first unusable element fails the whole
/// list, the error naming its index and the problem.
pub fn previous_from_values(values: &[Value]) -> Result<Vec<PreviousEvaluation>, SloError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            PreviousEvaluation::from_value(v)
                .map_err(|e| SloError::new(format!("previous evaluation {i}: {e}")))
        })
        .collect()
}

/// Keeps the candidates (newest first) whose `data.result` passes
/// `include_result_with_score` and takes the first [`Comparison::limit`],
/// as Keptn's datastore query does.
pub fn select_previous(
    c: &Comparison,
    candidates: Vec<PreviousEvaluation>,
) -> Vec<PreviousEvaluation> {
    candidates
        .into_iter()
        .filter(|p| eligible(c, p))
        .take(c.limit())
        .collect()
}

pub(crate) fn select_previous_refs<'a>(
    c: &Comparison,
    candidates: &'a [PreviousEvaluation],
) -> Vec<&'a PreviousEvaluation> {
    candidates
        .iter()
        .filter(|p| eligible(c, p))
        .take(c.limit())
        .collect()
}

fn eligible(c: &Comparison, p: &PreviousEvaluation) -> bool {
    match c.result_filter() {
        None => true,
        Some(results) => results.contains(&p.result.as_str()),
    }
}
