//! SLO evaluation: Keptn's lighthouse-service without its I/O (spec §4).
//!
//! [`parse`] reads `slo.yaml` with Keptn's parser defaults (§4.2),
//! [`previous_from_values`] and [`select_previous`] turn stored
//! `evaluation.finished` events into comparison input (§4.6), [`evaluate`]
//! scores indicator values against the objectives (§4.3–4.5), and
//! [`evaluation_finished_data`] is the whole decision lighthouse takes on a
//! `get-sli.finished`: the `data` of the `evaluation.finished` it answers with
//! (§4.1 step 6, §4.7).
//!
//! Keptn's behaviour is copied down to its quirks (an indicator value is used
//! by one objective only, the odd spacing of the leftover-SLI message, an
//! aborted evaluation reporting `evaluation.result: pass`); where Keptn would
//! crash (a `null` criteria set, a `null` indicator value) the input is
//! ignored instead. Nothing here panics, whatever the input.

mod criteria;
mod finished;
mod go_float;
mod go_json;
mod parse;
mod previous;
mod score;

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use criteria::{Criterion, Operator};
pub use finished::evaluation_finished_data;
pub use go_float::go_float;
pub(crate) use go_json::serialize_f64;
pub use parse::parse;
pub use previous::{previous_from_values, select_previous};
pub use score::evaluate;

/// An SLO file that cannot be used, an unusable criterion or total score, or a
/// previous evaluation that cannot be read. `Display` is the message Keptn
/// puts into its events where Keptn has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SloError(String);

impl SloError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        SloError(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// A parsed `slo.yaml` with Keptn's defaults applied (see [`parse`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Slo {
    /// `spec_version`, as written.
    pub spec_version: String,
    /// `filter`: passed to the SLI provider as `customFilters`.
    pub filter: BTreeMap<String, String>,
    /// `comparison`, defaulted.
    pub comparison: Comparison,
    /// `objectives` in file order, `null` entries dropped, weights defaulted.
    pub objectives: Vec<Objective>,
    /// `total_score`; `None` when the block is missing or `null`.
    pub total_score: Option<TotalScore>,
}

/// How previous evaluations are chosen and aggregated (`comparison`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// `single_result` | `several_results`; anything else behaves as
    /// `several_results` with 3 results (see [`Comparison::limit`]).
    pub compare_with: String,
    /// `pass` | `pass_or_warn` | `all` (see [`Comparison::result_filter`]).
    pub include_result_with_score: String,
    /// Used by `several_results`.
    pub number_of_comparison_results: usize,
    /// `avg` | `p50` | `p90` | `p95`; anything else aggregates to 0.
    pub aggregate_function: String,
}

impl Default for Comparison {
    /// What Keptn uses when `slo.yaml` has no `comparison` block.
    fn default() -> Self {
        Comparison {
            compare_with: "single_result".into(),
            include_result_with_score: "all".into(),
            number_of_comparison_results: 1,
            aggregate_function: "avg".into(),
        }
    }
}

impl Comparison {
    /// The `data.result` values a previous evaluation must have to be compared
    /// with (`None`: any): `pass` → `["pass"]`, `pass_or_warn` →
    /// `["pass", "warning"]`, anything else (`all`, empty) → `None`. Like
    /// Keptn, the setting is matched case-insensitively.
    pub fn result_filter(&self) -> Option<&'static [&'static str]> {
        match self.include_result_with_score.to_lowercase().as_str() {
            "pass" => Some(&["pass"]),
            "pass_or_warn" => Some(&["pass", "warning"]),
            _ => None,
        }
    }

    /// How many previous evaluations are compared with: `single_result` → 1,
    /// `several_results` → `number_of_comparison_results`, any other
    /// `compare_with` → 3 (Keptn's fallback, whatever the number says).
    pub fn limit(&self) -> usize {
        match self.compare_with.as_str() {
            "single_result" => 1,
            "several_results" => self.number_of_comparison_results,
            _ => 3,
        }
    }
}

/// One objective: an SLI with pass and warning criteria.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Objective {
    /// The SLI name (matched with the provider's `metric`).
    pub sli: String,
    /// `displayName`.
    pub display_name: String,
    /// `key_sli`: a failing key SLI fails the whole evaluation.
    pub key_sli: bool,
    /// `weight`; the parser turns 0 or missing into 1.
    pub weight: u32,
    /// `pass` criteria sets (OR of sets, AND within a set); empty makes the
    /// objective informational.
    pub pass: Vec<CriteriaSet>,
    /// `warning` criteria sets.
    pub warning: Vec<CriteriaSet>,
}

/// Criteria that must all hold (`{criteria: [...]}`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CriteriaSet {
    /// Criterion strings as written, e.g. `<=+10%`, `<600` (see [`Criterion`]).
    pub criteria: Vec<String>,
}

/// `total_score`: percentages as written, `%` optional.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TotalScore {
    /// Minimum score to pass; required for an evaluation.
    pub pass: String,
    /// Minimum score for a warning; empty when not configured.
    pub warning: String,
}

/// One SLI value as providers send it (`get-sli.finished`
/// `data.get-sli.indicatorValues[]`) and as it appears in indicator results,
/// with Keptn's JSON field names. Missing or `null` fields are zero values.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IndicatorValue {
    /// The SLI name.
    #[serde(deserialize_with = "go_json::null_as_default")]
    pub metric: String,
    /// The measured value.
    #[serde(
        deserialize_with = "go_json::null_as_default",
        serialize_with = "go_json::serialize_f64"
    )]
    pub value: f64,
    /// The aggregated previous value lighthouse compared with (0 when none).
    #[serde(
        deserialize_with = "go_json::null_as_default",
        serialize_with = "go_json::serialize_f64"
    )]
    pub compared_value: f64,
    /// Whether the provider could fetch the value.
    #[serde(deserialize_with = "go_json::null_as_default")]
    pub success: bool,
    /// The provider's message; omitted from JSON when empty, as Keptn does.
    #[serde(
        deserialize_with = "go_json::null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub message: String,
}

/// A previous `evaluation.finished` usable for comparison.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PreviousEvaluation {
    /// The event id (goes to `comparedEvents`); empty when only `data` was given.
    pub id: String,
    /// `data.result` of the event (what `include_result_with_score` filters on).
    pub result: String,
    /// `data.evaluation.indicatorResults`, `null` entries dropped.
    pub indicator_results: Vec<PreviousIndicator>,
}

/// One entry of a previous evaluation's `indicatorResults`: only its value
/// takes part in comparisons.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PreviousIndicator {
    /// `value`; `None` when it was `null` (such entries are never compared with).
    pub value: Option<IndicatorValue>,
}

/// What lighthouse found when it read `slo.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub enum SloInput<'a> {
    /// There is no `slo.yaml`: nothing is evaluated and the gate passes.
    Missing,
    /// Reading it failed; `raw` is whatever was read (reported base64-encoded).
    Unreadable {
        /// The message of the `evaluation.finished`.
        error: String,
        /// The bytes read, possibly none.
        raw: &'a [u8],
    },
    /// Its text. An empty text counts as [`SloInput::Missing`], as in Keptn.
    Text(&'a str),
    /// Its text and what [`parse`] made of it (a caller that parsed it
    /// already, to choose the previous evaluations, need not parse it twice).
    Parsed {
        /// The text (reported base64-encoded).
        text: &'a str,
        /// `parse(text)`.
        slo: &'a Slo,
    },
}

/// An evaluation's or an event's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// `pass`
    Pass,
    /// `warning`
    Warning,
    /// `fail`
    Fail,
}

impl Outcome {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Warning => "warning",
            Outcome::Fail => "fail",
        }
    }
}

/// The status of one indicator result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IndicatorStatus {
    /// Pass criteria met.
    Pass,
    /// Warning criteria met, pass criteria not.
    Warning,
    /// Neither met, or no usable value.
    Fail,
    /// No pass criteria: reported, not scored.
    Info,
}

/// One criterion as reported in `passTargets` / `warningTargets`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The criterion as written.
    pub criteria: String,
    /// The threshold the value was compared with (see §4.3–4.4 for relative
    /// criteria and failed values).
    #[serde(serialize_with = "go_json::serialize_f64")]
    pub target_value: f64,
    /// Whether the criterion was not met.
    pub violated: bool,
}

/// One entry of `evaluation.indicatorResults`, serialised in Keptn's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndicatorResult {
    /// `weight` (pass), `weight / 2` (warning) or 0.
    #[serde(serialize_with = "go_json::serialize_f64")]
    pub score: f64,
    /// The value evaluated; `None` only for an informational objective the
    /// provider sent no value for.
    pub value: Option<IndicatorValue>,
    /// The objective's `displayName`.
    pub display_name: String,
    /// Pass criteria results; `None` (JSON `null`) when no criterion was evaluated.
    pub pass_targets: Option<Vec<Target>>,
    /// Warning criteria results; `None` (JSON `null`) when there are none.
    pub warning_targets: Option<Vec<Target>>,
    /// The objective's `key_sli`, reported only for evaluated values (Keptn
    /// reports `false` for failed values and informational objectives).
    pub key_sli: bool,
    /// The status.
    pub status: IndicatorStatus,
}

/// What [`evaluate`] computed (§4.4–4.5).
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// `evaluation.result`.
    pub result: Outcome,
    /// `data.result` (differs from `result` only without objectives); the
    /// `get-sli.finished` result can still force it to `fail`.
    pub event_result: Outcome,
    /// `evaluation.score`, 0..=100.
    pub score: f64,
    /// `data.message`.
    pub message: String,
    /// `evaluation.indicatorResults`, one per objective in SLO order.
    pub indicator_results: Vec<IndicatorResult>,
}

/// Why [`evaluate`] produced no score.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvaluationError {
    /// A pass criterion of an objective with a value cannot be parsed
    /// (`error with <displayName or sli>: <reason>`); Keptn answers with a
    /// failed, not an errored, evaluation.
    #[error("{0}")]
    PassCriterion(SloError),
    /// `total_score` is missing or unparseable; Keptn answers errored.
    #[error("{0}")]
    TotalScore(SloError),
}
