//! The SLO evaluation never panics, whatever it is given, and its score stays
//! within 0..=100.

use super::go_float::parse_go_float;
use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1000.0..1000.0f64,
        any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()),
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(1e-320),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        number().prop_map(|f| json!(f)),
        "[a-z_]{0,8}".prop_map(Value::from),
        prop_oneof![
            Just("fail"),
            Just("pass"),
            Just("warning"),
            Just("aborted"),
            Just("errored"),
            Just("rt"),
            Just("error_rate"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("project".to_string()),
                    Just("stage".to_string()),
                    Just("status".to_string()),
                    Just("result".to_string()),
                    Just("message".to_string()),
                    Just("labels".to_string()),
                    Just("get-sli".to_string()),
                    Just("indicatorValues".to_string()),
                    Just("metric".to_string()),
                    Just("value".to_string()),
                    Just("success".to_string()),
                    Just("id".to_string()),
                    Just("data".to_string()),
                    Just("evaluation".to_string()),
                    Just("indicatorResults".to_string()),
                    "[a-zA-Z-]{1,8}",
                ],
                inner,
                0..8,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const CRITERIA: &[&str] = &[
    "<600", "<=+10%", ">=-5%", "<+5", ">-5", "=0", "<=1e3", "<= 800", "<inf", ">-inf", "<nan",
    "<0x1p4", "<1_000", "bogus", "", "|5", "<=10%%", ">=+200%", "<=-100%", "<1e308", ">1e-300",
];

fn criteria_yaml() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::collection::vec(prop::sample::select(CRITERIA), 0..3),
        0..3,
    )
    .prop_map(|sets| {
        let sets: Vec<String> = sets
            .iter()
            .map(|c| {
                let quoted: Vec<String> = c.iter().map(|s| format!("{s:?}")).collect();
                format!("{{criteria: [{}]}}", quoted.join(", "))
            })
            .collect();
        format!("[{}]", sets.join(", "))
    })
}

const METRICS: &[&str] = &["rt", "error_rate", "throughput", ""];

fn objective_yaml() -> impl Strategy<Value = String> {
    (
        prop::sample::select(METRICS),
        0u32..4,
        any::<bool>(),
        criteria_yaml(),
        criteria_yaml(),
    )
        .prop_map(|(sli, weight, key, pass, warning)| {
            format!(
                "  - sli: {sli:?}\n    weight: {weight}\n    key_sli: {key}\n    pass: {pass}\n    warning: {warning}\n"
            )
        })
}

fn slo_yaml() -> impl Strategy<Value = String> {
    (
        prop::sample::select(&["single_result", "several_results", "other", ""][..]),
        prop::sample::select(&["pass", "pass_or_warn", "all", ""][..]),
        0usize..5,
        prop::sample::select(&["avg", "p50", "p90", "p95", "median", ""][..]),
        prop::collection::vec(objective_yaml(), 0..5),
        prop::sample::select(&["90%", "0", "100", "75.5%", "NaN", "-inf", "x", ""][..]),
        prop::sample::select(&["75%", "50", "", "y", "1e309"][..]),
    )
        .prop_map(|(with, include, n, function, objectives, pass, warning)| {
            format!(
                "comparison:\n  compare_with: {with:?}\n  include_result_with_score: {include:?}\n  number_of_comparison_results: {n}\n  aggregate_function: {function:?}\nobjectives:\n{}total_score: {{pass: {pass:?}, warning: {warning:?}}}\n",
                objectives.concat()
            )
        })
}

fn indicator_value() -> impl Strategy<Value = Value> {
    (prop::sample::select(METRICS), number(), any::<bool>())
        .prop_map(|(m, v, ok)| json!({"metric": m, "value": v, "success": ok, "message": "m"}))
}

fn previous_evaluation() -> impl Strategy<Value = PreviousEvaluation> {
    (
        "[a-z0-9]{0,4}",
        prop::sample::select(&["pass", "warning", "fail", ""][..]),
        prop::collection::vec(
            prop::option::of(
                indicator_value()
                    .prop_map(|v| serde_json::from_value::<IndicatorValue>(v).unwrap_or_default()),
            ),
            0..4,
        ),
    )
        .prop_map(|(id, result, values)| PreviousEvaluation {
            id,
            result: result.into(),
            indicator_results: values
                .into_iter()
                .map(|value| PreviousIndicator { value })
                .collect(),
        })
}

fn assert_score_in_range(data: &Value) -> Result<(), TestCaseError> {
    let score = &data["evaluation"]["score"];
    prop_assert!(score.is_number(), "score {score} in {data}");
    let s = score.as_f64().unwrap_or(f64::NAN);
    prop_assert!((0.0..=100.0).contains(&s), "score {s} in {data}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        let _ = parse(&text);
    }

    #[test]
    fn parse_never_panics_on_slo_like_lines(
        lines in prop::collection::vec(prop_oneof![
            Just("objectives:".to_string()), Just("  - sli: rt".to_string()), Just("    weight: 2".to_string()),
            Just("    pass:".to_string()), Just("      - criteria:".to_string()), Just("          - \"<=+10%\"".to_string()),
            Just("comparison:".to_string()), Just("  number_of_comparison_results: -1".to_string()),
            Just("total_score: {pass: 90%}".to_string()), Just("  - ~".to_string()), Just("&a x: *a".to_string()),
            "[ -~]{0,30}",
        ], 0..20)
    ) {
        let _ = parse(&lines.join("\n"));
    }

    #[test]
    fn evaluation_never_panics_on_arbitrary_json(
        data in json_value(),
        text in prop_oneof![slo_yaml(), "\\PC{0,200}"],
        previous in prop::collection::vec(json_value(), 0..4),
    ) {
        let previous: Vec<PreviousEvaluation> = previous
            .iter()
            .filter_map(|v| PreviousEvaluation::from_value(v).ok())
            .collect();
        let _ = previous_from_values(std::slice::from_ref(&data));
        let out = evaluation_finished_data(&data, SloInput::Text(&text), &previous);
        prop_assert!(out["evaluation"].is_object());
        assert_score_in_range(&out)?;
    }

    #[test]
    fn score_stays_within_0_and_100(
        text in slo_yaml(),
        values in prop::collection::vec(indicator_value(), 0..6),
        status in prop::sample::select(&["succeeded", "errored", "aborted", ""][..]),
        result in prop::sample::select(&["pass", "fail", ""][..]),
        previous in prop::collection::vec(previous_evaluation(), 0..5),
    ) {
        let data = json!({
            "project": "sockshop", "stage": "dev", "service": "carts",
            "status": status, "result": result,
            "get-sli": {"start": "s", "end": "e", "indicatorValues": values},
        });
        let out = evaluation_finished_data(&data, SloInput::Text(&text), &previous);
        assert_score_in_range(&out)?;
        let ev = &out["evaluation"];
        prop_assert!(["pass", "warning", "fail"].contains(&ev["result"].as_str().unwrap_or("")));
        prop_assert!(["pass", "warning", "fail"].contains(&out["result"].as_str().unwrap_or("")));
        prop_assert!(["succeeded", "errored"].contains(&out["status"].as_str().unwrap_or("")));
        if let Ok(slo) = parse(&text) {
            if let Some(results) = ev["indicatorResults"].as_array() {
                prop_assert_eq!(results.len(), slo.objectives.len());
            }
        }
    }

    #[test]
    fn go_float_text_reads_back_as_the_same_float(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
        let text = go_float(f);
        prop_assert_eq!(parse_go_float(&text).map(f64::to_bits), Some(f.to_bits()), "{}", text);
    }

    #[test]
    fn hex_floats_read_back_as_the_float_they_spell(bits in any::<u64>()) {
        let f = f64::from_bits(bits);
        prop_assume!(f.is_finite());
        let sign = if f.is_sign_negative() { "-" } else { "" };
        let exponent = ((bits >> 52) & 0x7ff) as i64;
        let fraction = bits & ((1 << 52) - 1);
        let text = if exponent == 0 {
            format!("{sign}0x0.{fraction:013x}p-1022")
        } else {
            format!("{sign}0x1.{fraction:013x}p{}", exponent - 1023)
        };
        prop_assert_eq!(parse_go_float(&text).map(f64::to_bits), Some(bits), "{}", text);
    }
}
