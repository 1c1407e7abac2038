//! Objectives → indicator results (§4.4) → total score and result (§4.5).

use super::criteria::{aggregate, Criterion};
use super::go_float::{go_float, parse_go_float};
use super::{
    CriteriaSet, Evaluation, EvaluationError, IndicatorResult, IndicatorStatus, IndicatorValue,
    Objective, Outcome, PreviousEvaluation, Slo, SloError, Target,
};

/// Scores `values` (the provider's indicator values) against the objectives
/// of `slo`, comparing with `previous` exactly as given (newest first; use
/// [`super::select_previous`] to apply the SLO's comparison settings first).
///
/// Errors are the cases where Keptn reports no score: an unparseable pass
/// criterion of an objective that has a value, and a missing or unparseable
/// `total_score`.
pub fn evaluate(
    slo: &Slo,
    values: &[IndicatorValue],
    previous: &[PreviousEvaluation],
) -> Result<Evaluation, EvaluationError> {
    let previous: Vec<&PreviousEvaluation> = previous.iter().collect();
    evaluate_selected(slo, values.to_vec(), &previous)
}

pub(crate) fn evaluate_selected(
    slo: &Slo,
    values: Vec<IndicatorValue>,
    previous: &[&PreviousEvaluation],
) -> Result<Evaluation, EvaluationError> {
    if slo.objectives.is_empty() {
        // Keptn scores an empty SLO against a maximum of 100 (so 0%), then
        // overrides the event's result and message.
        let (result, score, _) =
            total_score(slo, 100.0, &[], None).map_err(EvaluationError::TotalScore)?;
        return Ok(Evaluation {
            result,
            event_result: Outcome::Fail,
            score,
            message: "lighthouse failed because no SLO objective was provided".into(),
            indicator_results: vec![],
        });
    }
    let scored = score_objectives(slo, values, previous).map_err(EvaluationError::PassCriterion)?;
    let (result, score, message) = total_score(
        slo,
        scored.maximum,
        &scored.indicators,
        scored.key_failure.as_ref(),
    )
    .map_err(EvaluationError::TotalScore)?;
    Ok(Evaluation {
        result,
        event_result: result,
        score,
        message: message.unwrap_or(scored.leftover_message),
        indicator_results: scored.indicators,
    })
}

struct KeyFailure {
    name: String,
    message: String,
}

struct Scored {
    indicators: Vec<IndicatorResult>,
    maximum: f64,
    key_failure: Option<KeyFailure>,
    leftover_message: String,
}

fn score_objectives(
    slo: &Slo,
    mut values: Vec<IndicatorValue>,
    previous: &[&PreviousEvaluation],
) -> Result<Scored, SloError> {
    let mut indicators = Vec::with_capacity(slo.objectives.len());
    let mut maximum = 0.0;
    let mut key_failure = None;
    for objective in &slo.objectives {
        let weight = f64::from(objective.weight);
        if !objective.pass.is_empty() {
            maximum += weight;
        }
        let successful: Vec<f64> = previous
            .iter()
            .flat_map(|p| &p.indicator_results)
            .filter_map(|r| r.value.as_ref())
            .filter(|v| v.metric == objective.sli && v.success)
            .map(|v| v.value)
            .collect();
        let aggregated = aggregate(&successful, &slo.comparison.aggregate_function);
        let value = take_value(&mut values, &objective.sli);

        if objective.pass.is_empty() {
            indicators.push(IndicatorResult {
                score: 0.0,
                value,
                display_name: objective.display_name.clone(),
                pass_targets: Some(vec![]),
                warning_targets: Some(unevaluated_targets(&objective.warning, aggregated)),
                key_sli: false,
                status: IndicatorStatus::Info,
            });
            continue;
        }

        let mut value = match value {
            Some(v) if v.success => v,
            missing_or_failed => {
                let value = missing_or_failed.unwrap_or_else(|| IndicatorValue {
                    metric: objective.sli.clone(),
                    message: "no value received from SLI provider".into(),
                    ..IndicatorValue::default()
                });
                if objective.key_sli {
                    key_failure = Some(KeyFailure {
                        name: objective.display_name.clone(),
                        message: value.message.clone(),
                    });
                }
                // Quirk: Keptn leaves keySli false on failed values.
                indicators.push(IndicatorResult {
                    score: 0.0,
                    value: Some(value),
                    display_name: objective.display_name.clone(),
                    pass_targets: Some(unevaluated_targets(&objective.pass, aggregated)),
                    warning_targets: Some(unevaluated_targets(&objective.warning, aggregated)),
                    key_sli: false,
                    status: IndicatorStatus::Fail,
                });
                continue;
            }
        };

        let (passed, pass_targets) = evaluate_sets(&mut value, &objective.pass, aggregated)
            .map_err(|e| SloError::new(format!("error with {}: {e}", name_of(objective))))?;
        let (warned, warning_targets) = if objective.warning.is_empty() {
            (false, None)
        } else {
            // An unparseable warning criterion makes the warning unmet and
            // its targets an empty list; Keptn does not report it.
            match evaluate_sets(&mut value, &objective.warning, aggregated) {
                Ok((met, targets)) => (met, targets),
                Err(_) => (false, Some(vec![])),
            }
        };
        let (score, status) = if passed {
            (weight, IndicatorStatus::Pass)
        } else if warned {
            (0.5 * weight, IndicatorStatus::Warning)
        } else {
            if objective.key_sli {
                // The score is always 0 here; Keptn prints it with %f.
                key_failure = Some(KeyFailure {
                    name: objective.display_name.clone(),
                    message: format!("failed evaluation with score {:.6}", 0.0),
                });
            }
            (0.0, IndicatorStatus::Fail)
        };
        indicators.push(IndicatorResult {
            score,
            value: Some(value),
            display_name: objective.display_name.clone(),
            pass_targets,
            warning_targets,
            key_sli: objective.key_sli,
            status,
        });
    }
    Ok(Scored {
        indicators,
        maximum,
        key_failure,
        leftover_message: leftover_message(&values),
    })
}

fn name_of(objective: &Objective) -> &str {
    if objective.display_name.is_empty() {
        &objective.sli
    } else {
        &objective.display_name
    }
}

/// Takes the first value of `metric` out of the provider's list. Quirk copied
/// from Keptn: the value is removed, so a second objective on the same SLI
/// finds no value; and the last value moves into its place, which is the
/// order the leftover message lists them in.
fn take_value(values: &mut Vec<IndicatorValue>, metric: &str) -> Option<IndicatorValue> {
    let i = values.iter().position(|v| v.metric == metric)?;
    Some(values.swap_remove(i))
}

/// Targets of criteria that were not evaluated (failed value, informational
/// objective): all violated; the threshold for absolute criteria and — Keptn
/// quirk — the aggregated value itself, not the computed target, for relative
/// ones. Unparseable criteria are left out.
fn unevaluated_targets(sets: &[CriteriaSet], aggregated: Option<f64>) -> Vec<Target> {
    sets.iter()
        .flat_map(|s| &s.criteria)
        .filter_map(|text| {
            let c = Criterion::parse(text).ok()?;
            Some(Target {
                criteria: text.clone(),
                target_value: if c.relative {
                    aggregated.unwrap_or(0.0)
                } else {
                    c.value
                },
                violated: true,
            })
        })
        .collect()
}

/// OR over the sets, AND within a set; every set is evaluated so that all
/// violations are reported. Targets are `None` when there was no criterion at
/// all (Keptn's nil slice, `null` in JSON). Every parsed criterion sets the
/// value's `comparedValue` to the aggregated value (0 when skipping).
fn evaluate_sets(
    value: &mut IndicatorValue,
    sets: &[CriteriaSet],
    aggregated: Option<f64>,
) -> Result<(bool, Option<Vec<Target>>), SloError> {
    let mut met = false;
    let mut targets = vec![];
    for set in sets {
        let mut all = true;
        for text in &set.criteria {
            let c = Criterion::parse(text)?;
            value.compared_value = aggregated.unwrap_or(0.0);
            let (holds, target_value) = match (c.relative, aggregated) {
                (false, _) => (c.operator.holds(value.value, c.value), c.value),
                (true, None) => (true, 0.0),
                (true, Some(a)) => {
                    let t = c.target(a);
                    (c.operator.holds(value.value, t), t)
                }
            };
            all &= holds;
            targets.push(Target {
                criteria: text.clone(),
                target_value,
                violated: !holds,
            });
        }
        met |= all;
    }
    Ok((met, (!targets.is_empty()).then_some(targets)))
}

/// Keptn's message for provider values no objective used, with its odd
/// " . " spacing; metrics are joined the way Keptn joins them (an empty first
/// metric adds no separator).
fn leftover_message(values: &[IndicatorValue]) -> String {
    let mut names = String::new();
    for v in values {
        if !names.is_empty() {
            names.push_str(", ");
        }
        names.push_str(&v.metric);
    }
    if names.is_empty() {
        return String::new();
    }
    format!(
        "Lighthouse received additional SLIs, which are not specified as SLO: {names} . \
         Please consider using them as an SLO."
    )
}

/// §4.5: the score and result, and the message replacing the event's message
/// (`None`: keep it). Only indicators with pass targets count towards the
/// score.
fn total_score(
    slo: &Slo,
    maximum: f64,
    indicators: &[IndicatorResult],
    key_failure: Option<&KeyFailure>,
) -> Result<(Outcome, f64, Option<String>), SloError> {
    let targets = slo
        .total_score
        .as_ref()
        .filter(|t| !t.pass.is_empty())
        .ok_or_else(|| SloError::new("no target score defined"))?;
    let percent = |s: &str| parse_go_float(s.strip_suffix('%').unwrap_or(s));
    let pass = percent(&targets.pass)
        .ok_or_else(|| SloError::new("could not parse pass target percentage"))?;
    let warning = if targets.warning.is_empty() {
        None
    } else {
        Some(
            percent(&targets.warning)
                .ok_or_else(|| SloError::new("could not parse warning target percentage"))?,
        )
    };
    if maximum == 0.0 {
        return Ok((Outcome::Pass, 100.0, None));
    }
    let total: f64 = indicators
        .iter()
        .filter(|r| r.pass_targets.as_ref().is_some_and(|t| !t.is_empty()))
        .fold(0.0, |sum, r| sum + r.score);
    let score = 100.0 * (total / maximum);
    let s = go_float(score);
    Ok(match (key_failure, warning) {
        (None, _) if score >= pass => (Outcome::Pass, score, None),
        (None, Some(w)) if score >= w => (
            Outcome::Warning,
            score,
            Some(format!(
                "Evaluation returned a warning: the calculated score of {s} is close to the warning target value of {}",
                go_float(w)
            )),
        ),
        (None, Some(w)) => (
            Outcome::Fail,
            score,
            Some(format!(
                "Evaluation failed since the calculated score of {s} is below the warning value of {}",
                go_float(w)
            )),
        ),
        (Some(k), _) => (
            Outcome::Fail,
            score,
            Some(format!(
                "Evaluation failed due to key_sli objective '{}': {}",
                k.name, k.message
            )),
        ),
        (None, None) => (
            Outcome::Fail,
            score,
            Some(format!(
                "Evaluation failed since the calculated score of {s} is below the target value of {}",
                go_float(pass)
            )),
        ),
    })
}
