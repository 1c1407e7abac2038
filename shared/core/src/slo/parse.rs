//! `slo.yaml` → [`Slo`], as Keptn's `parseSLO` (gopkg.in/yaml.v3 into
//! go-utils' `ServiceLevelObjectives`, then lighthouse's defaults).

use super::{Comparison, CriteriaSet, Objective, Slo, SloError, TotalScore};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// Parses `slo.yaml` (YAML or JSON) and applies Keptn's defaults (§4.2):
/// no `comparison` block → `single_result` / `all` / 1 / `avg`; a block with
/// `number_of_comparison_results` 0 or missing → 3, empty
/// `include_result_with_score` → `all`, empty `aggregate_function` → `avg`;
/// `null` objectives dropped; weight 0 or missing → 1.
///
/// Like yaml.v3, scalars are read as their text where a string is expected
/// (`pass: 90` is `"90"`), unknown keys are ignored, only the first document
/// counts and empty text is an SLO without objectives. Type errors are errors.
pub fn parse(text: &str) -> Result<Slo, SloError> {
    let Some(document) = serde_yaml_ng::Deserializer::from_str(text).next() else {
        return Ok(with_defaults(RawSlo::default()));
    };
    let raw = Option::<RawSlo>::deserialize(document)
        .map_err(|e| SloError::new(format!("slo.yaml is not a valid SLO file: {e}")))?
        .unwrap_or_default();
    Ok(with_defaults(raw))
}

fn with_defaults(raw: RawSlo) -> Slo {
    let comparison = match raw.comparison {
        None => Comparison::default(),
        Some(c) => {
            let mut c = Comparison {
                compare_with: c.compare_with.unwrap_or_default(),
                include_result_with_score: c.include_result_with_score.unwrap_or_default(),
                number_of_comparison_results: c.number_of_comparison_results.map_or(0, |n| n.0),
                aggregate_function: c.aggregate_function.unwrap_or_default(),
            };
            if c.include_result_with_score.is_empty() {
                c.include_result_with_score = "all".into();
            }
            if c.number_of_comparison_results == 0 {
                c.number_of_comparison_results = 3;
            }
            if c.aggregate_function.is_empty() {
                c.aggregate_function = "avg".into();
            }
            c
        }
    };
    let objectives = raw
        .objectives
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .map(|o| Objective {
            sli: o.sli.unwrap_or_default(),
            display_name: o.display_name.unwrap_or_default(),
            key_sli: o.key_sli.is_some_and(|b| b.0),
            weight: match o.weight.map_or(0, |w| w.0) {
                0 => 1,
                w => w,
            },
            pass: criteria_sets(o.pass),
            warning: criteria_sets(o.warning),
        })
        .collect();
    Slo {
        spec_version: raw.spec_version.unwrap_or_default(),
        filter: raw
            .filter
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect(),
        comparison,
        objectives,
        total_score: raw.total_score.map(|t| TotalScore {
            pass: t.pass.unwrap_or_default(),
            warning: t.warning.unwrap_or_default(),
        }),
    }
}

/// `null` criteria sets are dropped: Keptn dereferences them and crashes.
/// `null` criteria strings are empty strings, as yaml.v3 leaves them.
fn criteria_sets(raw: Option<Vec<Option<RawCriteriaSet>>>) -> Vec<CriteriaSet> {
    raw.unwrap_or_default()
        .into_iter()
        .flatten()
        .map(|s| CriteriaSet {
            criteria: s
                .criteria
                .unwrap_or_default()
                .into_iter()
                .map(Option::unwrap_or_default)
                .collect(),
        })
        .collect()
}

// Every field is an Option so that `null` reads as the zero value; a plain
// scalar deserialised as `String` keeps its text (serde_yaml_ng hands the raw
// scalar to `deserialize_str`), which is what yaml.v3 does for string fields.
// serde_yaml_ng reads structs from mappings only, as yaml.v3 does.

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawSlo {
    spec_version: Option<String>,
    filter: Option<BTreeMap<String, Option<String>>>,
    comparison: Option<RawComparison>,
    objectives: Option<Vec<Option<RawObjective>>>,
    total_score: Option<RawTotalScore>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawComparison {
    compare_with: Option<String>,
    include_result_with_score: Option<String>,
    number_of_comparison_results: Option<GoCount>,
    aggregate_function: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawObjective {
    sli: Option<String>,
    #[serde(rename = "displayName")]
    display_name: Option<String>,
    pass: Option<Vec<Option<RawCriteriaSet>>>,
    warning: Option<Vec<Option<RawCriteriaSet>>>,
    weight: Option<GoWeight>,
    key_sli: Option<GoBool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawCriteriaSet {
    criteria: Option<Vec<Option<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawTotalScore {
    pass: Option<String>,
    warning: Option<String>,
}

/// What yaml.v3 accepts for a Go `int`: an integer, or a float it truncates
/// (`2.7` → 2). Nothing else.
fn go_int<E: de::Error>(v: GoNumber) -> Result<i64, E> {
    match v {
        GoNumber::Int(i) => Ok(i),
        GoNumber::Float(f) if f.is_finite() && f.abs() < 9.2e18 => Ok(f.trunc() as i64),
        GoNumber::Float(f) => Err(E::custom(format!("cannot use {f} as an integer"))),
    }
}

enum GoNumber {
    Int(i64),
    Float(f64),
}

struct GoNumberVisitor;

impl Visitor<'_> for GoNumberVisitor {
    type Value = GoNumber;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoNumber, E> {
        Ok(GoNumber::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoNumber, E> {
        i64::try_from(v)
            .map(GoNumber::Int)
            .map_err(|_| E::custom(format!("{v} is too large")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<GoNumber, E> {
        Ok(GoNumber::Float(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<GoNumber, E> {
        Ok(GoNumber::Int(0))
    }
}

/// `weight`. Keptn takes any Go int; negative weights would let a score leave
/// 0..=100, so they are refused (as are weights beyond `u32`).
struct GoWeight(u32);

impl<'de> Deserialize<'de> for GoWeight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = go_int(d.deserialize_any(GoNumberVisitor)?)?;
        u32::try_from(n).map(GoWeight).map_err(|_| {
            de::Error::custom(format!(
                "weight must be between 0 and {}, got {n}",
                u32::MAX
            ))
        })
    }
}

/// `number_of_comparison_results`; negative counts are refused.
struct GoCount(usize);

impl<'de> Deserialize<'de> for GoCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = go_int(d.deserialize_any(GoNumberVisitor)?)?;
        usize::try_from(n).map(GoCount).map_err(|_| {
            de::Error::custom(format!(
                "number_of_comparison_results must not be negative, got {n}"
            ))
        })
    }
}

/// A Go `bool` as yaml.v3 reads it: `true`/`false`, plus the YAML 1.1 words
/// (`yes`, `on`, `n`, ...) it still accepts for typed booleans.
struct GoBool(bool);

impl<'de> Deserialize<'de> for GoBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GoBool;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true or false")
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<GoBool, E> {
                Ok(GoBool(v))
            }

            fn visit_unit<E: de::Error>(self) -> Result<GoBool, E> {
                Ok(GoBool(false))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoBool, E> {
                match v {
                    "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Ok(GoBool(true)),
                    "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Ok(GoBool(false)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}
