//! Table tests of the lighthouse rules (spec §4), with expectations taken from
//! Keptn's lighthouse-service tests where it has them.

use super::criteria::{aggregate, percentile};
use super::go_float::parse_go_float;
use super::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------- helpers

const START: &str = "2023-01-01T10:00:00.000Z";
const END: &str = "2023-01-01T10:05:00.000Z";

/// The SLO of the spec's example, plus an informational and a key objective.
const CARTS_SLO: &str = r#"---
spec_version: "1.0"
filter:
  handler: "ItemsController.addToCart"
comparison:
  aggregate_function: "avg"
  compare_with: "several_results"
  include_result_with_score: "pass"
  number_of_comparison_results: 2
objectives:
  - sli: "response_time_p95"
    displayName: "Response time P95"
    key_sli: false
    pass:             # relative change AND absolute limit
      - criteria:
          - "<=+10%"
          - "<600"
    warning:
      - criteria:
          - "<=800"
    weight: 1
  - sli: "throughput"
  - sli: "error_rate"
    displayName: "Error rate"
    weight: 2
    key_sli: true
    pass:
      - criteria:
          - "<=1"
total_score:
  pass: "90%"
  warning: "75%"
"#;

fn ok(metric: &str, value: f64) -> Value {
    json!({"metric": metric, "value": value, "success": true})
}

fn get_sli_data(values: Value) -> Value {
    json!({
        "project": "sockshop",
        "stage": "staging",
        "service": "carts",
        "status": "succeeded",
        "result": "pass",
        "get-sli": {"start": START, "end": END, "indicatorValues": values}
    })
}

fn value(metric: &str, v: f64) -> IndicatorValue {
    IndicatorValue {
        metric: metric.into(),
        value: v,
        success: true,
        ..IndicatorValue::default()
    }
}

fn previous(id: &str, result: &str, values: &[(&str, f64)]) -> PreviousEvaluation {
    PreviousEvaluation {
        id: id.into(),
        result: result.into(),
        indicator_results: values
            .iter()
            .map(|(m, v)| PreviousIndicator {
                value: Some(value(m, *v)),
            })
            .collect(),
    }
}

fn slo(text: &str) -> Slo {
    parse(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn run(slo_text: &str, values: &[IndicatorValue], prev: &[PreviousEvaluation]) -> Evaluation {
    evaluate(&slo(slo_text), values, prev).unwrap()
}

fn only(slo_text: &str, values: &[IndicatorValue], prev: &[PreviousEvaluation]) -> IndicatorResult {
    let mut ev = run(slo_text, values, prev);
    assert_eq!(ev.indicator_results.len(), 1, "{ev:?}");
    ev.indicator_results.remove(0)
}

fn target(criteria: &str, target_value: f64, violated: bool) -> Target {
    Target {
        criteria: criteria.into(),
        target_value,
        violated,
    }
}

fn finished(slo_text: &str, values: Value, prev: &[PreviousEvaluation]) -> Value {
    evaluation_finished_data(&get_sli_data(values), SloInput::Text(slo_text), prev)
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// One objective on `rt` with the given pass/warning criteria lists.
fn one_objective(pass: &str, warning: &str, total: &str) -> String {
    format!(
        "comparison:\n  compare_with: several_results\n  number_of_comparison_results: 3\n\
         objectives:\n  - sli: rt\n    displayName: Response time\n    pass: {pass}\n    warning: {warning}\n\
         total_score: {total}\n"
    )
}

// ------------------------------------------------------------- go %v text

#[test]
fn floats_print_like_go_percent_v() {
    let table: &[(f64, &str)] = &[
        (75.3, "75.3"),
        (74.0, "74"),
        (200.0 / 3.0, "66.66666666666667"),
        (100.0 * (2.5 / 3.0), "83.33333333333334"),
        (100.0, "100"),
        (0.0, "0"),
        (-0.0, "-0"),
        (-2.5, "-2.5"),
        (0.1 + 0.2, "0.30000000000000004"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (0.000012345, "1.2345e-05"),
        (123456.0, "123456"),
        (999999.0, "999999"),
        (1e6, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (1e21, "1e+21"),
        (1e100, "1e+100"),
        (f64::MAX, "1.7976931348623157e+308"),
        (5e-324, "5e-324"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
    ];
    for (f, want) in table {
        assert_eq!(go_float(*f), *want, "{f:e}");
    }
}

#[test]
fn numbers_parse_like_go_strconv_parse_float() {
    let table: &[(&str, Option<f64>)] = &[
        ("10", Some(10.0)),
        ("10.5", Some(10.5)),
        ("+10", Some(10.0)),
        ("-10", Some(-10.0)),
        (".5", Some(0.5)),
        ("5.", Some(5.0)),
        ("1e3", Some(1000.0)),
        ("1E+3", Some(1000.0)),
        ("1e-3", Some(0.001)),
        ("1_000", Some(1000.0)),
        ("1_0.5_0e1_0", Some(10.5e10)),
        ("0x10p0", Some(16.0)),
        ("0X1.8P1", Some(3.0)),
        ("0x1p-2", Some(0.25)),
        ("0x_1p4", Some(16.0)),
        ("0x0.01p0", Some(1.0 / 256.0)),
        ("1e-400", Some(0.0)),
        ("inf", Some(f64::INFINITY)),
        ("+Infinity", Some(f64::INFINITY)),
        ("-INF", Some(f64::NEG_INFINITY)),
        // Not numbers to Go.
        ("", None),
        (".", None),
        ("+", None),
        ("1e", None),
        ("1e+", None),
        ("1e_1", None),
        ("_1", None),
        ("1_", None),
        ("1__0", None),
        ("1._5", None),
        ("0x10", None),
        ("0x", None),
        ("+nan", None),
        ("infin", None),
        ("1.2.3", None),
        (" 1", None),
        ("1%", None),
        ("abc", None),
        ("1,5", None),
        // Go's ErrRange.
        ("1e400", None),
        ("-1e400", None),
        ("0x1p1024", None),
    ];
    for (text, want) in table {
        assert_eq!(parse_go_float(text), *want, "{text:?}");
    }
    assert!(parse_go_float("nan").unwrap().is_nan());
    assert!(parse_go_float("NaN").unwrap().is_nan());
}

#[test]
fn hex_floats_round_to_nearest_even_like_go() {
    let table: &[(&str, f64)] = &[
        ("0x1.fffffffffffffp1023", f64::MAX),
        // 54 significant bits, exactly halfway: ties go to the even mantissa.
        ("0x1.fffffffffffff8p0", 2.0),
        ("0x1.0000000000000_8p0", 1.0),
        ("0x1.00000000000018p0", 1.0 + 2.0 * f64::EPSILON),
        // A non-zero digit beyond the kept ones breaks the tie upwards.
        ("0x1.00000000000008000000001p0", 1.0 + f64::EPSILON),
        ("0x1p-1074", 5e-324),
        ("0x1p-1075", 0.0),
        ("0x1.1p-1075", 5e-324),
        ("0x1p-1022", f64::MIN_POSITIVE),
        ("-0x1p0", -1.0),
    ];
    for (text, want) in table {
        assert_eq!(parse_go_float(text), Some(*want), "{text}");
    }
}

// --------------------------------------------------------------- criteria

#[test]
fn criteria_parse_like_keptn() {
    use Operator::*;
    // (text, operator, value, relative, percentage, increase)
    let table: &[(&str, Operator, f64, bool, bool, bool)] = &[
        ("<10", Lt, 10.0, false, false, false),
        ("<=10", Le, 10.0, false, false, false),
        ("=10", Eq, 10.0, false, false, false),
        (">=10", Ge, 10.0, false, false, false),
        (">10", Gt, 10.0, false, false, false),
        (">-10%", Gt, 10.0, true, true, false),
        ("<=+10.5%", Le, 10.5, true, true, true),
        ("<=+10", Le, 10.0, true, false, true),
        ("<=-5", Le, 5.0, true, false, false),
        ("  <=+10   %", Le, 10.0, true, true, true),
        ("  <=10%", Le, 10.0, true, true, true),
        ("< 600", Lt, 600.0, false, false, false),
        ("<=1e3", Le, 1000.0, false, false, false),
        ("=0", Eq, 0.0, false, false, false),
        // A sign after the stripped one belongs to the number.
        ("<=+-5", Le, -5.0, true, false, true),
    ];
    for &(text, operator, value, relative, percentage, increase) in table {
        let want = Criterion {
            operator,
            value,
            relative,
            percentage,
            increase,
        };
        assert_eq!(Criterion::parse(text), Ok(want), "{text:?}");
    }
}

#[test]
fn unparseable_criteria_give_keptns_error_texts() {
    let table: &[(&str, &str)] = &[
        ("", "invalid criteria string"),
        ("10", "invalid criteria string"),
        ("!=5", "invalid criteria string"),
        ("\t<5", "invalid criteria string"),
        ("lower than 5", "invalid criteria string"),
        ("<", "could not parse criteria target value"),
        ("=>5", "could not parse criteria target value"),
        ("==5", "could not parse criteria target value"),
        ("<>5", "could not parse criteria target value"),
        ("<\t5", "could not parse criteria target value"),
        ("<=10%%", "could not parse criteria target value"),
        ("<=%10", "could not parse criteria target value"),
        ("<=abc", "could not parse criteria target value"),
        ("<1e400", "could not parse criteria target value"),
        ("<5ms", "could not parse criteria target value"),
        // `|` passes Keptn's regex but never its number parse, so Keptn's
        // "no operator set" cannot be produced.
        ("|5", "could not parse criteria target value"),
        ("||", "could not parse criteria target value"),
    ];
    for (text, want) in table {
        assert_eq!(
            Criterion::parse(text).map_err(|e| e.to_string()),
            Err(want.to_string()),
            "{text:?}"
        );
    }
}

#[test]
fn relative_targets_follow_keptns_formulas() {
    let table: &[(&str, f64, f64)] = &[
        ("<=+10%", 200.0, 220.0),
        ("<=10%", 200.0, 220.0),
        (">=-10%", 200.0, 180.0),
        ("<+5", 200.0, 205.0),
        (">-5", 200.0, 195.0),
        ("<600", 200.0, 600.0),
        ("<=+15%", 10.0, 11.5),
    ];
    for (text, a, want) in table {
        assert_eq!(Criterion::parse(text).unwrap().target(*a), *want, "{text}");
    }
}

#[test]
fn operators_compare_measured_with_target() {
    use Operator::*;
    let table: &[(Operator, f64, f64, bool)] = &[
        (Gt, 10.0, 9.0, true),
        (Ge, 10.0, 10.0, true),
        (Le, 10.0, 10.0, true),
        (Lt, 10.0, 10.0, false),
        (Gt, 10.0, 10.0, false),
        (Eq, 10.0, 10.0, true),
        (Eq, 10.0, 9.0, false),
        (Le, f64::NAN, 10.0, false),
        (Ge, 10.0, f64::NAN, false),
    ];
    for (op, measured, t, want) in table {
        assert_eq!(op.holds(*measured, *t), *want, "{measured} {op:?} {t}");
    }
}

// ------------------------------------------------------------ aggregation

#[test]
fn aggregation_functions_match_keptn() {
    let zero_to_ten: Vec<f64> = (0..=10).map(f64::from).collect();
    let table: &[(&[f64], &str, Option<f64>)] = &[
        (&zero_to_ten, "p50", Some(5.0)),
        (&zero_to_ten, "p90", Some(9.8)),
        (&zero_to_ten, "p95", Some(10.0)),
        (&zero_to_ten, "avg", Some(5.0)),
        (&[10.0, 10.0], "avg", Some(10.0)),
        (&[4.0, 1.0, 3.0, 2.0], "p50", Some(2.5)),
        (&[7.0], "p50", Some(7.0)),
        (&[7.0], "p95", Some(7.0)),
        (&[3.0, 1.0], "p50", Some(2.0)),
        // Unknown functions compare against 0, without skipping.
        (&[5.0, 1.0], "p10", Some(0.0)),
        (&[5.0, 1.0], "median", Some(0.0)),
        (&[5.0, 1.0], "AVG", Some(0.0)),
        (&[], "avg", None),
        (&[], "p90", None),
    ];
    for (values, function, want) in table {
        assert_eq!(aggregate(values, function), *want, "{function} {values:?}");
    }
    // A position below 1 clamps to the smallest value.
    assert_eq!(percentile(&[5.0, 1.0], 0.1), 1.0);
}

#[test]
fn an_average_of_negative_zeros_is_positive_zero_as_in_go() {
    assert!(aggregate(&[-0.0, -0.0], "avg").unwrap().is_sign_positive());
}

// ------------------------------------------------------------- slo.yaml

#[test]
fn a_missing_comparison_block_means_single_result_all_one_avg() {
    let s = slo("objectives:\n  - sli: rt\n");
    assert_eq!(
        s.comparison,
        Comparison {
            compare_with: "single_result".into(),
            include_result_with_score: "all".into(),
            number_of_comparison_results: 1,
            aggregate_function: "avg".into(),
        }
    );
    assert_eq!(slo("comparison: ~\n").comparison, Comparison::default());
}

#[test]
fn a_present_comparison_block_is_defaulted_field_by_field() {
    let table: &[(&str, &str, &str, usize, &str)] = &[
        ("comparison: {}", "", "all", 3, "avg"),
        (
            "comparison: {compare_with: several_results, number_of_comparison_results: 0}",
            "several_results",
            "all",
            3,
            "avg",
        ),
        (
            "comparison: {compare_with: several_results, number_of_comparison_results: 5, include_result_with_score: pass_or_warn, aggregate_function: p90}",
            "several_results",
            "pass_or_warn",
            5,
            "p90",
        ),
        (
            "comparison: {compare_with: single_result, include_result_with_score: '', aggregate_function: ''}",
            "single_result",
            "all",
            3,
            "avg",
        ),
        // yaml.v3 truncates a float given for an int.
        ("comparison: {number_of_comparison_results: 2.9}", "", "all", 2, "avg"),
        ("comparison: {aggregate_function: median}", "", "all", 3, "median"),
    ];
    for (text, compare_with, include, n, function) in table {
        let c = slo(text).comparison;
        assert_eq!(
            (
                c.compare_with.as_str(),
                c.include_result_with_score.as_str(),
                c.number_of_comparison_results,
                c.aggregate_function.as_str()
            ),
            (*compare_with, *include, *n, *function),
            "{text}"
        );
    }
}

#[test]
fn comparison_limit_and_result_filter_follow_keptns_query() {
    let c = |compare_with: &str, include: &str, n: usize| Comparison {
        compare_with: compare_with.into(),
        include_result_with_score: include.into(),
        number_of_comparison_results: n,
        aggregate_function: "avg".into(),
    };
    let table: &[(Comparison, usize, Option<&[&str]>)] = &[
        (c("single_result", "all", 5), 1, None),
        (c("several_results", "pass", 5), 5, Some(&["pass"])),
        (
            c("several_results", "PASS_OR_WARN", 2),
            2,
            Some(&["pass", "warning"]),
        ),
        (
            c("several_results", "pass_or_warn", 2),
            2,
            Some(&["pass", "warning"]),
        ),
        (c("", "", 7), 3, None),
        (c("Single_Result", "anything", 7), 3, None),
    ];
    for (comparison, limit, filter) in table {
        assert_eq!(comparison.limit(), *limit, "{comparison:?}");
        assert_eq!(comparison.result_filter(), *filter, "{comparison:?}");
    }
}

#[test]
fn objectives_get_keptns_defaults() {
    let s = slo(
        "objectives:\n  - sli: a\n  - ~\n  - sli: b\n    weight: 0\n  - sli: c\n    weight: 3\n    key_sli: yes\n  - sli: d\n    weight: 2.7\n    key_sli: ~\n",
    );
    let got: Vec<(&str, u32, bool)> = s
        .objectives
        .iter()
        .map(|o| (o.sli.as_str(), o.weight, o.key_sli))
        .collect();
    assert_eq!(
        got,
        [
            ("a", 1, false),
            ("b", 1, false),
            ("c", 3, true),
            ("d", 2, false)
        ]
    );
}

#[test]
fn scalars_are_read_as_their_text_where_keptn_expects_strings() {
    let s = slo(
        "spec_version: 1.0\nfilter: {id: 42, empty: ~}\nobjectives:\n  - sli: 0.10\n    displayName: 1.50\n    pass: [{criteria: [\"<=5\", ~, 7]}]\ntotal_score: {pass: 90, warning: 75.0}\n",
    );
    assert_eq!(s.spec_version, "1.0");
    assert_eq!(
        s.filter.into_iter().collect::<Vec<_>>(),
        [("empty".into(), String::new()), ("id".into(), "42".into())]
    );
    assert_eq!(s.objectives[0].sli, "0.10");
    assert_eq!(s.objectives[0].display_name, "1.50");
    assert_eq!(
        s.objectives[0].pass,
        [CriteriaSet {
            criteria: vec!["<=5".into(), String::new(), "7".into()]
        }]
    );
    assert_eq!(
        s.total_score,
        Some(TotalScore {
            pass: "90".into(),
            warning: "75.0".into()
        })
    );
}

#[test]
fn null_criteria_sets_are_dropped_instead_of_crashing_like_keptn() {
    let s =
        slo("objectives:\n  - sli: rt\n    pass: [~]\n    warning: [~, {criteria: [\"<5\"]}]\n");
    assert!(s.objectives[0].pass.is_empty());
    assert_eq!(s.objectives[0].warning.len(), 1);
}

#[test]
fn yaml_one_point_one_booleans_are_accepted_for_key_sli() {
    let table: &[(&str, bool)] = &[
        ("true", true),
        ("True", true),
        ("yes", true),
        ("ON", true),
        ("'y'", true),
        ("false", false),
        ("no", false),
        ("off", false),
        ("~", false),
    ];
    for (text, want) in table {
        let s = slo(&format!("objectives:\n  - sli: a\n    key_sli: {text}\n"));
        assert_eq!(s.objectives[0].key_sli, *want, "{text}");
    }
}

#[test]
fn empty_or_null_documents_are_slos_without_objectives() {
    for text in ["", "\n", "# nothing yet\n", "~", "---\n"] {
        assert_eq!(slo(text), Slo::default(), "{text:?}");
    }
}

#[test]
fn json_is_accepted_and_only_the_first_yaml_document_counts() {
    let s = slo(
        r#"{"objectives":[{"sli":"rt","pass":[{"criteria":["<600"]}]}],"total_score":{"pass":"90%"}}"#,
    );
    assert_eq!(s.objectives[0].pass[0].criteria, ["<600"]);
    let s = slo("objectives: [{sli: first}]\n---\nobjectives: [{sli: second}]\n");
    assert_eq!(s.objectives[0].sli, "first");
}

#[test]
fn type_errors_and_broken_yaml_are_parse_errors() {
    let table: &[&str] = &[
        "just a string",
        "- a list",
        "objectives: {sli: rt}",
        "objectives:\n  - [rt, Response time]\n",
        "objectives:\n  - sli: rt\n    pass: [[\"<5\"]]\n",
        "objectives:\n  - sli: [rt]\n",
        "objectives:\n  - sli: rt\n    weight: heavy\n",
        "objectives:\n  - sli: rt\n    weight: '2'\n",
        "objectives:\n  - sli: rt\n    weight: -1\n",
        "objectives:\n  - sli: rt\n    weight: 4294967296\n",
        "objectives:\n  - sli: rt\n    weight: .inf\n",
        "objectives:\n  - sli: rt\n    key_sli: 1\n",
        "objectives:\n  - sli: rt\n    key_sli: 'true'\n",
        "objectives:\n  - sli: rt\n    pass: {criteria: ['<5']}\n",
        "objectives:\n  - sli: rt\n    pass: [{criteria: '<5'}]\n",
        "comparison: {number_of_comparison_results: -2}\n",
        "comparison: several_results\n",
        "filter: {a: [1]}\n",
        "total_score: 90\n",
        "objectives: [\n",
        "a: 1\n  b: 2\n",
    ];
    for text in table {
        assert!(parse(text).is_err(), "{text:?}");
    }
    assert!(parse("objectives:\n  - sli: rt\n    weight: -1\n")
        .unwrap_err()
        .to_string()
        .contains("weight must be between 0 and 4294967295, got -1"));
}

// -------------------------------------------------- objectives (§4.4)

const RT_SLO: &str = r#"
comparison:
  compare_with: several_results
  include_result_with_score: pass
  number_of_comparison_results: 2
  aggregate_function: avg
objectives:
  - sli: rt
    pass:
      - criteria: ["<=15.0"]
      - criteria: ["<=+10%"]
    warning:
      - criteria: ["<=20.0"]
      - criteria: ["<=+15%"]
total_score: {pass: "90%", warning: "75%"}
"#;

#[test]
fn a_value_meeting_a_pass_set_passes_with_its_weight() {
    // Keptn's "Simple comparison evaluation".
    let r = only(
        RT_SLO,
        &[value("rt", 10.0)],
        &[previous("p", "pass", &[("rt", 10.0)])],
    );
    assert_eq!(r.status, IndicatorStatus::Pass);
    assert_eq!(r.score, 1.0);
    assert_eq!(
        r.pass_targets,
        Some(vec![
            target("<=15.0", 15.0, false),
            target("<=+10%", 11.0, false)
        ])
    );
    assert_eq!(
        r.warning_targets,
        Some(vec![
            target("<=20.0", 20.0, false),
            target("<=+15%", 11.5, false)
        ])
    );
    assert_eq!(r.value.unwrap().compared_value, 10.0);
}

#[test]
fn a_value_meeting_only_warning_criteria_scores_half_its_weight() {
    // Keptn's "Expect Warning".
    let s = RT_SLO.replace(
        "objectives:\n  - sli: rt\n",
        "objectives:\n  - sli: rt\n    weight: 3\n",
    );
    let r = only(
        &s,
        &[value("rt", 16.0)],
        &[previous("p", "pass", &[("rt", 10.0)])],
    );
    assert_eq!(r.status, IndicatorStatus::Warning);
    assert_eq!(r.score, 1.5);
    assert_eq!(
        r.pass_targets,
        Some(vec![
            target("<=15.0", 15.0, true),
            target("<=+10%", 11.0, true)
        ])
    );
    assert_eq!(
        r.warning_targets,
        Some(vec![
            target("<=20.0", 20.0, false),
            target("<=+15%", 11.5, true)
        ])
    );
}

#[test]
fn a_value_meeting_nothing_fails_with_score_zero() {
    let r = only(
        RT_SLO,
        &[value("rt", 30.0)],
        &[previous("p", "pass", &[("rt", 10.0)])],
    );
    assert_eq!((r.status, r.score), (IndicatorStatus::Fail, 0.0));
    assert!(r.pass_targets.unwrap().iter().all(|t| t.violated));
    assert!(r.warning_targets.unwrap().iter().all(|t| t.violated));
}

#[test]
fn all_criteria_of_a_set_must_hold_and_every_set_is_reported() {
    // Keptn's "BUG 1125": relative part skipped, absolute part violated.
    let s = "objectives:\n  - sli: response_time_p50\n    pass:\n      - criteria: [\"<=+20%\", \"<500\"]\ntotal_score: {pass: '90%', warning: '75%'}\n";
    let r = only(s, &[value("response_time_p50", 1011.0745528937252)], &[]);
    assert_eq!(r.status, IndicatorStatus::Fail);
    assert_eq!(
        r.pass_targets,
        Some(vec![
            target("<=+20%", 0.0, false),
            target("<500", 500.0, true)
        ])
    );
    assert_eq!(r.warning_targets, None);
}

#[test]
fn relative_criterion_without_previous_results_is_satisfied() {
    let s = one_objective("[{criteria: ['<=+10%', '>=-50']}]", "~", "{pass: '90%'}");
    let r = only(&s, &[value("rt", 1e9)], &[]);
    assert_eq!(r.status, IndicatorStatus::Pass);
    assert_eq!(
        r.pass_targets,
        Some(vec![
            target("<=+10%", 0.0, false),
            target(">=-50", 0.0, false)
        ])
    );
    assert_eq!(r.value.unwrap().compared_value, 0.0);
}

#[test]
fn relative_criterion_with_only_failed_previous_results_is_satisfied() {
    let s = one_objective("[{criteria: ['<=+10%']}]", "~", "{pass: '90%'}");
    let mut failed = previous("p", "pass", &[("rt", 1.0)]);
    failed.indicator_results[0].value.as_mut().unwrap().success = false;
    let r = only(&s, &[value("rt", 500.0)], &[failed]);
    assert_eq!(r.status, IndicatorStatus::Pass);
    assert_eq!(r.pass_targets, Some(vec![target("<=+10%", 0.0, false)]));
}

#[test]
fn compared_value_is_set_for_absolute_criteria_too() {
    let s = one_objective("[{criteria: ['<600']}]", "~", "{pass: '90%'}");
    let prev = [
        previous("a", "pass", &[("rt", 100.0), ("other", 1.0)]),
        previous("b", "pass", &[("rt", 300.0)]),
    ];
    let r = only(&s, &[value("rt", 210.0)], &prev);
    let v = r.value.unwrap();
    assert_eq!(v.compared_value, 200.0);
    assert_eq!(r.pass_targets, Some(vec![target("<600", 600.0, false)]));
}

#[test]
fn previous_values_that_failed_are_null_or_of_other_metrics_are_not_aggregated() {
    let s = one_objective("[{criteria: ['<=+0%']}]", "~", "{pass: '90%'}");
    let mut failed = previous("f", "pass", &[("rt", 1000.0)]);
    failed.indicator_results[0].value.as_mut().unwrap().success = false;
    let null = PreviousEvaluation {
        id: "n".into(),
        result: "pass".into(),
        indicator_results: vec![PreviousIndicator { value: None }],
    };
    let prev = [
        failed,
        null,
        previous("o", "pass", &[("latency", 5.0)]),
        previous("g", "pass", &[("rt", 100.0)]),
    ];
    let r = only(&s, &[value("rt", 100.0)], &prev);
    assert_eq!(r.pass_targets, Some(vec![target("<=+0%", 100.0, false)]));
    assert_eq!(r.value.unwrap().compared_value, 100.0);
}

#[test]
fn an_unknown_aggregate_function_compares_against_zero() {
    let s = "comparison: {aggregate_function: median}\nobjectives:\n  - sli: rt\n    pass: [{criteria: ['<=+10%']}]\ntotal_score: {pass: '90%'}\n";
    let r = only(
        s,
        &[value("rt", 210.0)],
        &[previous("p", "pass", &[("rt", 200.0)])],
    );
    assert_eq!(r.status, IndicatorStatus::Fail);
    assert_eq!(r.pass_targets, Some(vec![target("<=+10%", 0.0, true)]));
    assert_eq!(r.value.unwrap().compared_value, 0.0);
}

#[test]
fn p90_aggregation_is_used_for_relative_targets() {
    let s = "comparison: {compare_with: several_results, number_of_comparison_results: 11, aggregate_function: p90}\nobjectives:\n  - sli: rt\n    pass: [{criteria: ['<=+0']}]\ntotal_score: {pass: '90%'}\n";
    let prev: Vec<PreviousEvaluation> = (0..=10)
        .map(|i| previous(&format!("e{i}"), "pass", &[("rt", f64::from(i))]))
        .collect();
    let r = only(s, &[value("rt", 9.8)], &prev);
    assert_eq!(r.pass_targets, Some(vec![target("<=+0", 9.8, false)]));
    assert_eq!(r.value.unwrap().compared_value, 9.8);
}

#[test]
fn an_objective_without_pass_criteria_is_info_and_unscored() {
    // Keptn's "Logging SLI with no pass criteria should not affect score".
    let s = "objectives:\n  - sli: rt\n    pass: [{criteria: ['<=15']}]\n  - sli: log\n    displayName: Log lines\n    key_sli: true\n    weight: 5\n    warning: [{criteria: ['<=100', '<=+5%', 'bogus']}]\n  - sli: empty\n    pass: []\ntotal_score: {pass: '90%'}\n";
    let prev = [previous("p", "pass", &[("log", 40.0)])];
    let ev = run(s, &[value("rt", 10.0), value("log", 30.0)], &prev);
    assert_eq!(ev.score, 100.0);
    let info = &ev.indicator_results[1];
    assert_eq!(info.status, IndicatorStatus::Info);
    assert_eq!(info.score, 0.0);
    assert_eq!(info.display_name, "Log lines");
    assert!(!info.key_sli);
    assert_eq!(info.value, Some(value("log", 30.0)));
    assert_eq!(info.pass_targets, Some(vec![]));
    // Listed as violated; a relative target shows the aggregated value.
    assert_eq!(
        info.warning_targets,
        Some(vec![
            target("<=100", 100.0, true),
            target("<=+5%", 40.0, true)
        ])
    );
    let missing = &ev.indicator_results[2];
    assert_eq!(missing.status, IndicatorStatus::Info);
    assert_eq!(missing.value, None);
    assert_eq!(missing.warning_targets, Some(vec![]));
}

#[test]
fn a_missing_value_fails_with_a_synthesised_value_and_violated_targets() {
    // Keptn's "6096" and "Fail with result equal to nil".
    let prev = [previous("p", "pass", &[("rt", 5.0)])];
    let ev = run(RT_SLO, &[], &prev);
    let r = &ev.indicator_results[0];
    assert_eq!((r.status, r.score), (IndicatorStatus::Fail, 0.0));
    assert_eq!(
        r.value,
        Some(IndicatorValue {
            metric: "rt".into(),
            message: "no value received from SLI provider".into(),
            ..IndicatorValue::default()
        })
    );
    // Quirk: relative targets show the aggregated value, not the target.
    assert_eq!(
        r.pass_targets,
        Some(vec![
            target("<=15.0", 15.0, true),
            target("<=+10%", 5.0, true)
        ])
    );
    assert_eq!(
        r.warning_targets,
        Some(vec![
            target("<=20.0", 20.0, true),
            target("<=+15%", 5.0, true)
        ])
    );
}

#[test]
fn a_failed_value_is_kept_as_sent_and_fails() {
    // Keptn's "Fail with result success = false".
    let sent = IndicatorValue {
        metric: "rt".into(),
        value: 3.0,
        compared_value: 7.0,
        success: false,
        message: "could not get data".into(),
    };
    let r = only(
        RT_SLO,
        std::slice::from_ref(&sent),
        &[previous("p", "pass", &[("rt", 10.0)])],
    );
    assert_eq!(r.status, IndicatorStatus::Fail);
    assert_eq!(r.value, Some(sent));
    assert_eq!(
        r.pass_targets,
        Some(vec![
            target("<=15.0", 15.0, true),
            target("<=+10%", 10.0, true)
        ])
    );
}

#[test]
fn failed_values_leave_unparseable_criteria_out_of_their_targets() {
    let s = one_objective(
        "[{criteria: ['<5', 'five']}]",
        "[{criteria: ['?']}]",
        "{pass: '90%'}",
    );
    let r = only(&s, &[], &[]);
    assert_eq!(r.pass_targets, Some(vec![target("<5", 5.0, true)]));
    assert_eq!(r.warning_targets, Some(vec![]));
}

#[test]
fn warning_targets_are_null_without_warning_criteria_and_empty_when_unparseable() {
    let s = one_objective(
        "[{criteria: ['<5']}]",
        "[{criteria: ['<=9', 'soon']}]",
        "{pass: '90%', warning: '40%'}",
    );
    let r = only(&s, &[value("rt", 8.0)], &[]);
    // The warning would hold, but an unparseable criterion silently voids it.
    assert_eq!(r.status, IndicatorStatus::Fail);
    assert_eq!(r.warning_targets, Some(vec![]));
    let s = one_objective("[{criteria: ['<5']}]", "~", "{pass: '90%'}");
    assert_eq!(only(&s, &[value("rt", 1.0)], &[]).warning_targets, None);
}

#[test]
fn a_pass_set_without_criteria_passes_but_does_not_count_towards_the_score() {
    // Keptn: the weight goes into the maximum, the (unreported) pass does not
    // go into the total.
    let s = "objectives:\n  - sli: a\n    pass: [{criteria: []}]\n  - sli: b\n    pass: [{criteria: ['<5']}]\ntotal_score: {pass: '90%', warning: '40%'}\n";
    let ev = run(s, &[value("a", 1.0), value("b", 1.0)], &[]);
    let a = &ev.indicator_results[0];
    assert_eq!(
        (a.status, a.score, a.pass_targets.clone()),
        (IndicatorStatus::Pass, 1.0, None)
    );
    assert_eq!(ev.score, 50.0);
    assert_eq!(ev.result, Outcome::Warning);
}

#[test]
fn a_value_is_used_by_one_objective_only() {
    // Quirk: the provider's value is removed once used.
    let s = "objectives:\n  - sli: rt\n    displayName: first\n    pass: [{criteria: ['<5']}]\n  - sli: rt\n    displayName: second\n    pass: [{criteria: ['<5']}]\ntotal_score: {pass: '50%'}\n";
    let ev = run(s, &[value("rt", 1.0)], &[]);
    assert_eq!(ev.indicator_results[0].status, IndicatorStatus::Pass);
    assert_eq!(ev.indicator_results[1].status, IndicatorStatus::Fail);
    assert_eq!(
        ev.indicator_results[1].value.as_ref().unwrap().message,
        "no value received from SLI provider"
    );
    // A duplicate from the provider serves the second objective.
    let ev = run(s, &[value("rt", 1.0), value("rt", 9.0)], &[]);
    assert_eq!(ev.indicator_results[1].value, Some(value("rt", 9.0)));
    assert_eq!(ev.indicator_results[1].status, IndicatorStatus::Fail);
}

#[test]
fn key_sli_is_reported_only_for_evaluated_values() {
    let s = "objectives:\n  - sli: a\n    key_sli: true\n    pass: [{criteria: ['<5']}]\n  - sli: b\n    key_sli: true\n    pass: [{criteria: ['<5']}]\ntotal_score: {pass: '0%'}\n";
    let ev = run(s, &[value("a", 1.0)], &[]);
    assert!(ev.indicator_results[0].key_sli);
    assert!(!ev.indicator_results[1].key_sli);
}

#[test]
fn a_key_sli_with_a_warning_does_not_fail_the_evaluation() {
    let s = one_objective(
        "[{criteria: ['<5']}]",
        "[{criteria: ['<10']}]",
        "{pass: '90%', warning: '50%'}",
    )
    .replace("    displayName", "    key_sli: true\n    displayName");
    let ev = run(&s, &[value("rt", 7.0)], &[]);
    assert_eq!(ev.result, Outcome::Warning);
    assert_eq!(ev.score, 50.0);
}

// ------------------------------------------------ total score (§4.5)

const TWO_SLO: &str = "objectives:\n  - sli: a\n    displayName: Latency\n    pass: [{criteria: ['<10']}]\n    warning: [{criteria: ['<20']}]\n  - sli: b\n    pass: [{criteria: ['<10']}]\n    warning: [{criteria: ['<20']}]\n";

#[test]
fn total_score_branches_and_messages_match_keptn() {
    struct Case {
        total: &'static str,
        a: f64,
        b: f64,
        key: bool,
        result: Outcome,
        score: f64,
        message: &'static str,
    }
    let cases = [
        Case { total: "{pass: '90%', warning: '75%'}", a: 1.0, b: 1.0, key: false, result: Outcome::Pass, score: 100.0, message: "" },
        Case { total: "{pass: '90', warning: '75'}", a: 1.0, b: 1.0, key: false, result: Outcome::Pass, score: 100.0, message: "" },
        Case { total: "{pass: '75%', warning: '50%'}", a: 1.0, b: 15.0, key: false, result: Outcome::Pass, score: 75.0, message: "" },
        Case {
            total: "{pass: '90%', warning: '75%'}", a: 1.0, b: 15.0, key: false, result: Outcome::Warning, score: 75.0,
            message: "Evaluation returned a warning: the calculated score of 75 is close to the warning target value of 75",
        },
        Case {
            total: "{pass: '90%', warning: '75.5%'}", a: 1.0, b: 15.0, key: false, result: Outcome::Fail, score: 75.0,
            message: "Evaluation failed since the calculated score of 75 is below the warning value of 75.5",
        },
        Case {
            total: "{pass: '90%'}", a: 15.0, b: 15.0, key: false, result: Outcome::Fail, score: 50.0,
            message: "Evaluation failed since the calculated score of 50 is below the target value of 90",
        },
        Case {
            total: "{pass: '90%', warning: ''}", a: 15.0, b: 99.0, key: false, result: Outcome::Fail, score: 25.0,
            message: "Evaluation failed since the calculated score of 25 is below the target value of 90",
        },
        Case {
            total: "{pass: '10%', warning: '5%'}", a: 99.0, b: 1.0, key: true, result: Outcome::Fail, score: 50.0,
            message: "Evaluation failed due to key_sli objective 'Latency': failed evaluation with score 0.000000",
        },
        // A warning on a key SLI is no key failure.
        Case { total: "{pass: '80%', warning: '5%'}", a: 15.0, b: 1.0, key: true, result: Outcome::Warning, score: 75.0,
            message: "Evaluation returned a warning: the calculated score of 75 is close to the warning target value of 5" },
    ];
    for c in cases {
        let mut text = format!("{TWO_SLO}total_score: {}\n", c.total);
        if c.key {
            text = text.replacen("    displayName", "    key_sli: true\n    displayName", 1);
        }
        let ev = run(&text, &[value("a", c.a), value("b", c.b)], &[]);
        assert_eq!(
            (ev.result, ev.score, ev.message.as_str()),
            (c.result, c.score, c.message),
            "{text}"
        );
        assert_eq!(ev.event_result, ev.result);
    }
}

#[test]
fn scores_are_not_rounded_and_print_like_go() {
    let s = "objectives:\n  - sli: a\n    pass: [{criteria: ['<10']}]\n  - sli: b\n    pass: [{criteria: ['<10']}]\n  - sli: c\n    pass: [{criteria: ['<10']}]\n    warning: [{criteria: ['<20']}]\ntotal_score: {pass: '90%', warning: '80%'}\n";
    let ev = run(
        s,
        &[value("a", 1.0), value("b", 1.0), value("c", 15.0)],
        &[],
    );
    assert_eq!(ev.score, 100.0 * (2.5 / 3.0));
    assert_eq!(ev.result, Outcome::Warning);
    assert_eq!(
        ev.message,
        "Evaluation returned a warning: the calculated score of 83.33333333333334 is close to the warning target value of 80"
    );
}

#[test]
fn a_missing_key_sli_value_fails_with_the_value_message() {
    let s = "objectives:\n  - sli: cpu\n    displayName: cpu time\n    key_sli: true\n    pass: [{criteria: ['<10']}]\n  - sli: b\n    pass: [{criteria: ['<10']}]\ntotal_score: {pass: '10%', warning: '5%'}\n";
    let ev = run(s, &[value("b", 1.0)], &[]);
    assert_eq!(ev.result, Outcome::Fail);
    assert_eq!(ev.score, 50.0);
    assert_eq!(
        ev.message,
        "Evaluation failed due to key_sli objective 'cpu time': no value received from SLI provider"
    );
    let failed = IndicatorValue {
        metric: "cpu".into(),
        success: false,
        message: "query timed out".into(),
        ..IndicatorValue::default()
    };
    let ev = run(s, &[value("b", 1.0), failed], &[]);
    assert_eq!(
        ev.message,
        "Evaluation failed due to key_sli objective 'cpu time': query timed out"
    );
}

#[test]
fn only_info_objectives_pass_with_score_100() {
    let s = "objectives:\n  - sli: a\n  - sli: b\ntotal_score: {pass: '90%'}\n";
    let ev = run(s, &[value("a", 1.0)], &[]);
    assert_eq!((ev.result, ev.score), (Outcome::Pass, 100.0));
}

#[test]
fn unusable_total_scores_are_errors_with_keptns_texts() {
    let table: &[(&str, &str)] = &[
        ("", "no target score defined"),
        ("total_score: ~\n", "no target score defined"),
        ("total_score: {warning: '75%'}\n", "no target score defined"),
        ("total_score: {pass: ''}\n", "no target score defined"),
        (
            "total_score: {pass: 'ninety'}\n",
            "could not parse pass target percentage",
        ),
        (
            "total_score: {pass: '90%%'}\n",
            "could not parse pass target percentage",
        ),
        (
            "total_score: {pass: ' 90%'}\n",
            "could not parse pass target percentage",
        ),
        (
            "total_score: {pass: '90%', warning: '75 %'}\n",
            "could not parse warning target percentage",
        ),
    ];
    for (total, want) in table {
        let text = format!("objectives:\n  - sli: a\n    pass: [{{criteria: ['<10']}}]\n{total}");
        assert_eq!(
            evaluate(&slo(&text), &[value("a", 1.0)], &[]),
            Err(EvaluationError::TotalScore(SloError::new(*want))),
            "{text}"
        );
    }
}

#[test]
fn an_unparseable_pass_criterion_names_the_objective() {
    let table: &[(&str, &str)] = &[
        (
            "displayName: Response time\n    ",
            "error with Response time: could not parse criteria target value",
        ),
        ("", "error with rt: could not parse criteria target value"),
    ];
    for (display, want) in table {
        let text = format!("objectives:\n  - sli: rt\n    {display}pass: [{{criteria: ['<5']}}, {{criteria: ['<5ms']}}]\ntotal_score: {{pass: '90%'}}\n");
        assert_eq!(
            evaluate(&slo(&text), &[value("rt", 1.0)], &[]),
            Err(EvaluationError::PassCriterion(SloError::new(*want))),
        );
    }
    let text =
        "objectives:\n  - sli: rt\n    pass: [{criteria: ['5']}]\ntotal_score: {pass: '90%'}\n";
    assert_eq!(
        evaluate(&slo(text), &[value("rt", 1.0)], &[])
            .unwrap_err()
            .to_string(),
        "error with rt: invalid criteria string"
    );
}

#[test]
fn an_slo_without_objectives_fails_the_event() {
    let ev = run(
        "total_score: {pass: '90%', warning: '75%'}\n",
        &[value("a", 1.0)],
        &[],
    );
    assert_eq!(
        (ev.result, ev.event_result, ev.score, ev.message.as_str()),
        (
            Outcome::Fail,
            Outcome::Fail,
            0.0,
            "lighthouse failed because no SLO objective was provided"
        )
    );
    assert!(ev.indicator_results.is_empty());
    // Quirk: the score (0) is still held against the targets.
    let ev = run("total_score: {pass: '0'}\n", &[], &[]);
    assert_eq!((ev.result, ev.event_result), (Outcome::Pass, Outcome::Fail));
}

// --------------------------------------------------- leftover SLIs

#[test]
fn leftover_slis_are_listed_in_keptns_order_and_spacing() {
    let s =
        "objectives:\n  - sli: b\n    pass: [{criteria: ['<10']}]\ntotal_score: {pass: '90%'}\n";
    // b is swapped out for the last value, so d comes before c.
    let ev = run(
        s,
        &[
            value("a", 1.0),
            value("b", 1.0),
            value("c", 1.0),
            value("d", 1.0),
        ],
        &[],
    );
    assert_eq!(
        ev.message,
        "Lighthouse received additional SLIs, which are not specified as SLO: a, d, c . Please consider using them as an SLO."
    );
    // An empty first metric adds no separator; only empty names: no message.
    let ev = run(s, &[value("", 1.0), value("b", 1.0), value("x", 1.0)], &[]);
    assert_eq!(
        ev.message,
        "Lighthouse received additional SLIs, which are not specified as SLO: x . Please consider using them as an SLO."
    );
    assert_eq!(run(s, &[value("", 1.0), value("b", 1.0)], &[]).message, "");
}

#[test]
fn the_leftover_message_is_kept_only_when_the_evaluation_passes() {
    let s = "objectives:\n  - sli: b\n    pass: [{criteria: ['<10']}]\n    warning: [{criteria: ['<20']}]\ntotal_score: {pass: '90%', warning: '50%'}\n";
    let extra = value("x", 1.0);
    assert!(run(s, &[value("b", 1.0), extra.clone()], &[])
        .message
        .starts_with("Lighthouse received"));
    assert!(run(s, &[value("b", 15.0), extra.clone()], &[])
        .message
        .starts_with("Evaluation returned a warning"));
    assert!(run(s, &[value("b", 25.0), extra], &[])
        .message
        .starts_with("Evaluation failed"));
}

// ------------------------------------------- previous evaluations (§4.6)

#[test]
fn previous_evaluations_are_read_from_events_or_their_data() {
    let data = json!({
        "project": "sockshop", "stage": "staging", "service": "carts",
        "status": "succeeded", "result": "warning", "labels": {"buildId": "1"},
        "evaluation": {
            "timeStart": START, "timeEnd": END, "result": "warning", "score": 75.5,
            "sloFileContent": "", "comparedEvents": ["x"],
            "indicatorResults": [
                {"score": 1, "status": "pass", "keySli": false, "displayName": "RT",
                 "value": {"metric": "rt", "value": 210.5, "comparedValue": 200, "success": true},
                 "passTargets": [{"criteria": "<600", "targetValue": 600, "violated": false}],
                 "warningTargets": null},
                {"score": 0, "status": "info", "value": null},
                null
            ]
        }
    });
    let event = json!({"id": "e1", "type": "sh.keptn.event.evaluation.finished", "data": data});
    let got = previous_from_values(&[event, data]).unwrap();
    let want = PreviousEvaluation {
        id: "e1".into(),
        result: "warning".into(),
        indicator_results: vec![
            PreviousIndicator {
                value: Some(IndicatorValue {
                    compared_value: 200.0,
                    ..value("rt", 210.5)
                }),
            },
            PreviousIndicator { value: None },
        ],
    };
    assert_eq!(got[0], want);
    assert_eq!(
        got[1],
        PreviousEvaluation {
            id: String::new(),
            ..want
        }
    );
}

#[test]
fn unusable_previous_evaluations_name_their_index_and_problem() {
    let good = json!({"id": "e1", "data": {"result": "pass"}});
    let table: &[(Value, &str)] = &[
        (json!("e1"), "previous evaluation 1: is not a JSON object"),
        (json!({"id": 7, "data": {}}), "previous evaluation 1: id is not a string"),
        (json!({"id": "e2", "data": []}), "previous evaluation 1: json: cannot unmarshal array into field data of type EvaluationFinishedEventData"),
        (json!({"result": 1}), "previous evaluation 1: json: cannot unmarshal number 1 into field data.result of type string"),
        (
            json!({"evaluation": {"score": "100"}}),
            "previous evaluation 1: json: cannot unmarshal string into field data.evaluation.score of type float64",
        ),
        (
            json!({"evaluation": {"indicatorResults": [{"value": {"metric": "rt", "value": "fast"}}]}}),
            "previous evaluation 1: json: cannot unmarshal string into field data.evaluation.indicatorResults[0].value.value of type float64",
        ),
        (
            json!({"evaluation": {"indicatorResults": [{"passTargets": [{"violated": "no"}]}]}}),
            "previous evaluation 1: json: cannot unmarshal string into field data.evaluation.indicatorResults[0].passTargets[0].violated of type bool",
        ),
        (json!({"labels": {"a": 1}}), "previous evaluation 1: json: cannot unmarshal number 1 into field data.labels.a of type string"),
    ];
    for (bad, want) in table {
        let err = previous_from_values(&[good.clone(), bad.clone()]).unwrap_err();
        assert_eq!(err.to_string(), *want, "{bad}");
    }
    assert_eq!(
        previous_from_values(&[json!({"id": "e", "data": null})]).unwrap()[0].id,
        "e"
    );
}

#[test]
fn previous_evaluations_are_filtered_by_result_and_limited() {
    let candidates = vec![
        previous("e1", "fail", &[]),
        previous("e2", "pass", &[]),
        previous("e3", "warning", &[]),
        previous("e4", "pass", &[]),
        previous("e5", "pass", &[]),
        previous("e6", "pass", &[]),
    ];
    let c = |compare_with: &str, include: &str, n: usize| Comparison {
        compare_with: compare_with.into(),
        include_result_with_score: include.into(),
        number_of_comparison_results: n,
        aggregate_function: "avg".into(),
    };
    let table: &[(Comparison, &[&str])] = &[
        (c("single_result", "all", 3), &["e1"]),
        (c("single_result", "pass", 3), &["e2"]),
        (c("several_results", "pass", 2), &["e2", "e4"]),
        (c("several_results", "pass_or_warn", 3), &["e2", "e3", "e4"]),
        (
            c("several_results", "all", 10),
            &["e1", "e2", "e3", "e4", "e5", "e6"],
        ),
        (c("whatever", "all", 10), &["e1", "e2", "e3"]),
    ];
    for (comparison, want) in table {
        let got: Vec<String> = select_previous(comparison, candidates.clone())
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(got, *want, "{comparison:?}");
    }
}

#[test]
fn indicator_values_use_keptns_json_names_and_zero_defaults() {
    let v: IndicatorValue =
        serde_json::from_value(json!({"metric": "rt", "value": null, "success": true})).unwrap();
    assert_eq!(v, value("rt", 0.0));
    let v: IndicatorValue = serde_json::from_value(json!({})).unwrap();
    assert_eq!(v, IndicatorValue::default());
    assert_eq!(
        serde_json::to_value(value("rt", 10.0)).unwrap(),
        json!({"metric": "rt", "value": 10, "comparedValue": 0, "success": true})
    );
    let with_message = IndicatorValue {
        message: "no data".into(),
        value: 0.25,
        ..IndicatorValue::default()
    };
    assert_eq!(
        serde_json::to_string(&with_message).unwrap(),
        r#"{"metric":"","value":0.25,"comparedValue":0,"success":false,"message":"no data"}"#
    );
}

// ---------------------------------- evaluation.finished data (§4.1, §4.7)

#[test]
fn a_full_evaluation_finished_data_object_matches_keptns_shape() {
    let mut data = get_sli_data(json!([
        ok("response_time_p95", 210.5),
        ok("throughput", 1200.0),
        ok("error_rate", 0.5)
    ]));
    data["labels"] = json!({"buildId": "42"});
    let prev = [
        previous(
            "e1",
            "pass",
            &[("response_time_p95", 200.0), ("error_rate", 0.4)],
        ),
        previous("e2", "fail", &[("response_time_p95", 1000.0)]),
        previous(
            "e3",
            "pass",
            &[("response_time_p95", 220.0), ("error_rate", 0.6)],
        ),
        previous("e4", "pass", &[("response_time_p95", 5.0)]),
    ];
    let got = evaluation_finished_data(&data, SloInput::Text(CARTS_SLO), &prev);
    let want = json!({
        "project": "sockshop", "stage": "staging", "service": "carts",
        "labels": {"buildId": "42"},
        "status": "succeeded", "result": "pass",
        "evaluation": {
            "timeStart": START, "timeEnd": END,
            "result": "pass", "score": 100,
            "sloFileContent": b64(CARTS_SLO),
            "comparedEvents": ["e1", "e3"],
            "indicatorResults": [
                {"score": 1, "status": "pass", "keySli": false, "displayName": "Response time P95",
                 "value": {"metric": "response_time_p95", "value": 210.5, "comparedValue": 210, "success": true},
                 "passTargets": [{"criteria": "<=+10%", "targetValue": 231, "violated": false},
                                 {"criteria": "<600", "targetValue": 600, "violated": false}],
                 "warningTargets": [{"criteria": "<=800", "targetValue": 800, "violated": false}]},
                {"score": 0, "status": "info", "keySli": false, "displayName": "",
                 "value": {"metric": "throughput", "value": 1200, "comparedValue": 0, "success": true},
                 "passTargets": [], "warningTargets": []},
                {"score": 2, "status": "pass", "keySli": true, "displayName": "Error rate",
                 "value": {"metric": "error_rate", "value": 0.5, "comparedValue": 0.5, "success": true},
                 "passTargets": [{"criteria": "<=1", "targetValue": 1, "violated": false}],
                 "warningTargets": null}
            ]
        }
    });
    assert_eq!(got, want);
}

#[test]
fn a_failed_key_sli_fails_the_finished_event_with_its_message() {
    let got = finished(
        CARTS_SLO,
        json!([ok("response_time_p95", 210.5), ok("error_rate", 3.0)]),
        &[],
    );
    assert_eq!(got["status"], "succeeded");
    assert_eq!(got["result"], "fail");
    assert_eq!(got["evaluation"]["result"], "fail");
    assert_eq!(got["evaluation"]["score"], json!(100.0 * (1.0 / 3.0)));
    assert_eq!(
        got["message"],
        "Evaluation failed due to key_sli objective 'Error rate': failed evaluation with score 0.000000"
    );
    assert!(got["evaluation"].get("comparedEvents").is_none());
}

#[test]
fn an_aborted_get_sli_answers_errored_with_evaluation_result_pass() {
    let mut data = get_sli_data(json!([ok("rt", 1.0)]));
    data["status"] = json!("aborted");
    data["labels"] = json!({"l": "v"});
    let got = evaluation_finished_data(
        &data,
        SloInput::Text(CARTS_SLO),
        &[previous("e", "pass", &[])],
    );
    assert_eq!(
        got,
        json!({
            "project": "sockshop", "stage": "staging", "service": "carts", "labels": {"l": "v"},
            "status": "errored", "result": "fail",
            "message": "evaluation performed by lighthouse was aborted",
            "evaluation": {"timeStart": START, "timeEnd": END, "result": "pass", "score": 0,
                           "sloFileContent": "", "indicatorResults": null}
        })
    );
}

#[test]
fn an_errored_get_sli_answers_errored_with_its_message() {
    let mut data = get_sli_data(json!([]));
    data["status"] = json!("errored");
    data["message"] = json!("Prometheus API returned 503");
    let got = evaluation_finished_data(&data, SloInput::Missing, &[]);
    assert_eq!(
        got,
        json!({
            "project": "sockshop", "stage": "staging", "service": "carts",
            "status": "errored", "result": "fail",
            "message": "evaluation performed by lighthouse received an unexpected error: Prometheus API returned 503",
            "evaluation": {"timeStart": START, "timeEnd": END, "result": "pass", "score": 0,
                           "sloFileContent": "", "indicatorResults": null}
        })
    );
}

#[test]
fn no_slo_file_passes_without_evaluation() {
    let want = json!({
        "project": "sockshop", "stage": "staging", "service": "carts",
        "status": "succeeded", "result": "pass",
        "message": "no evaluation performed by lighthouse because no SLO file configured for project sockshop",
        "evaluation": {"timeStart": START, "timeEnd": END, "result": "pass", "score": 0,
                       "sloFileContent": "", "indicatorResults": null}
    });
    let data = get_sli_data(json!([ok("rt", 1.0)]));
    assert_eq!(
        evaluation_finished_data(&data, SloInput::Missing, &[]),
        want
    );
    assert_eq!(
        evaluation_finished_data(&data, SloInput::Text(""), &[]),
        want
    );
}

#[test]
fn an_unreadable_slo_file_answers_errored_with_the_error_and_what_was_read() {
    let data = get_sli_data(json!([]));
    let got = evaluation_finished_data(
        &data,
        SloInput::Unreadable {
            error: "slo.yaml is not UTF-8 text".into(),
            raw: b"\xff\xfe",
        },
        &[],
    );
    assert_eq!(
        got,
        json!({
            "project": "sockshop", "stage": "staging", "service": "carts",
            "status": "errored", "result": "fail", "message": "slo.yaml is not UTF-8 text",
            "evaluation": {"timeStart": START, "timeEnd": END, "result": "fail", "score": 0,
                           "sloFileContent": "//4=", "indicatorResults": null}
        })
    );
}

#[test]
fn an_unparseable_slo_file_answers_errored_with_keptns_message() {
    let text = "objectives: {not: a list}\n";
    let got = finished(text, json!([ok("rt", 1.0)]), &[previous("e", "pass", &[])]);
    assert_eq!(
        got,
        json!({
            "project": "sockshop", "stage": "staging", "service": "carts",
            "status": "errored", "result": "fail",
            "message": "Could not parse SLO file for service carts in stage staging in project sockshop",
            "evaluation": {"timeStart": START, "timeEnd": END, "result": "fail", "score": 0,
                           "sloFileContent": b64(text), "indicatorResults": null}
        })
    );
}

#[test]
fn an_unparseable_pass_criterion_fails_the_evaluation_without_indicators() {
    let text = "comparison: {compare_with: several_results}\nobjectives:\n  - sli: rt\n    displayName: RT\n    pass: [{criteria: ['<= 5 s']}]\ntotal_score: {pass: '90%'}\n";
    let got = finished(text, json!([ok("rt", 1.0)]), &[previous("e7", "pass", &[])]);
    assert_eq!(
        got,
        json!({
            "project": "sockshop", "stage": "staging", "service": "carts",
            "status": "succeeded", "result": "fail",
            "message": "error with RT: could not parse criteria target value",
            "evaluation": {"timeStart": START, "timeEnd": END, "result": "fail", "score": 0,
                           "sloFileContent": b64(text), "indicatorResults": null,
                           "comparedEvents": ["e7"]}
        })
    );
}

#[test]
fn a_missing_target_score_answers_errored_without_compared_events() {
    let text = "objectives:\n  - sli: rt\n    pass: [{criteria: ['<5']}]\n";
    let got = finished(text, json!([ok("rt", 1.0)]), &[previous("e7", "pass", &[])]);
    assert_eq!(
        got,
        json!({
            "project": "sockshop", "stage": "staging", "service": "carts",
            "status": "errored", "result": "fail", "message": "no target score defined",
            "evaluation": {"timeStart": START, "timeEnd": END, "result": "fail", "score": 0,
                           "sloFileContent": b64(text), "indicatorResults": null}
        })
    );
}

#[test]
fn a_failed_get_sli_forces_the_event_result_but_keeps_the_evaluation() {
    let mut data = get_sli_data(json!([
        ok("response_time_p95", 210.5),
        ok("error_rate", 0.5)
    ]));
    data["result"] = json!("fail");
    data["message"] = json!("could not fetch throughput");
    let got = evaluation_finished_data(&data, SloInput::Text(CARTS_SLO), &[]);
    assert_eq!(got["status"], "succeeded");
    assert_eq!(got["result"], "fail");
    assert_eq!(
        got["message"],
        "lighthouse failed because SLI failed with message could not fetch throughput"
    );
    assert_eq!(got["evaluation"]["result"], "pass");
    assert_eq!(got["evaluation"]["score"], 100);
    assert_eq!(
        got["evaluation"]["indicatorResults"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}

#[test]
fn an_slo_without_objectives_answers_failed_with_keptns_message() {
    // Keptn's "9198": the SLO's message wins over the failed get-sli's.
    let text = "spec_version: '1.0'\ntotal_score: {pass: '90%', warning: '75%'}\n";
    let mut data = get_sli_data(
        json!([{"metric": "no metric", "success": false, "message": "no SLIs were requested"}]),
    );
    data["result"] = json!("fail");
    let got = evaluation_finished_data(&data, SloInput::Text(text), &[]);
    assert_eq!(
        got,
        json!({
            "project": "sockshop", "stage": "staging", "service": "carts",
            "status": "succeeded", "result": "fail",
            "message": "lighthouse failed because no SLO objective was provided",
            "evaluation": {"timeStart": START, "timeEnd": END, "result": "fail", "score": 0,
                           "sloFileContent": b64(text), "indicatorResults": null}
        })
    );
}

#[test]
fn get_sli_data_that_go_cannot_decode_answers_errored() {
    let table: &[(Value, &str)] = &[
        (json!([1]), "Could not parse event payload: json: cannot unmarshal array into field data of type GetSLIFinishedEventData"),
        (json!({"project": 1}), "Could not parse event payload: json: cannot unmarshal number 1 into field project of type string"),
        (json!({"get-sli": {"indicatorValues": {}}}), "Could not parse event payload: json: cannot unmarshal object into field get-sli.indicatorValues of type []*SLIResult"),
        (json!({"get-sli": {"indicatorValues": [{"metric": "rt", "value": "1"}]}}), "Could not parse event payload: json: cannot unmarshal string into field get-sli.indicatorValues[0].value of type float64"),
        (json!({"get-sli": {"indicatorValues": [{"success": "true"}]}}), "Could not parse event payload: json: cannot unmarshal string into field get-sli.indicatorValues[0].success of type bool"),
        (json!({"labels": ["a"]}), "Could not parse event payload: json: cannot unmarshal array into field labels of type map[string]string"),
    ];
    for (data, want) in table {
        let got = evaluation_finished_data(data, SloInput::Text(CARTS_SLO), &[]);
        assert_eq!(got["status"], "errored", "{data}");
        assert_eq!(got["result"], "fail");
        assert_eq!(got["message"], *want);
        assert_eq!(got["evaluation"]["result"], "fail");
        assert_eq!(got["evaluation"]["sloFileContent"], "");
    }
    // What decoded before the error is kept, as Go keeps it.
    let got =
        evaluation_finished_data(&json!({"project": "p", "stage": 2}), SloInput::Missing, &[]);
    assert_eq!(got["project"], "p");
}

#[test]
fn get_sli_fields_are_matched_like_go_json() {
    // null is a zero value, keys match case-insensitively, a null indicator
    // value (a crash in Keptn) is ignored.
    let data = json!({
        "Project": "sockshop", "STAGE": "staging", "service": "carts", "labels": null, "message": null,
        "get-sli": {"Start": START, "end": END, "indicatorValues": [null, {"Metric": "rt", "value": 1, "success": true}]}
    });
    let text =
        "objectives:\n  - sli: rt\n    pass: [{criteria: ['<5']}]\ntotal_score: {pass: '90%'}\n";
    let got = evaluation_finished_data(&data, SloInput::Text(text), &[]);
    assert_eq!(got["project"], "sockshop");
    assert_eq!(got["stage"], "staging");
    assert_eq!(got["result"], "pass");
    assert_eq!(got["evaluation"]["timeStart"], START);
    assert_eq!(got["evaluation"]["score"], 100);
    assert!(got.get("labels").is_none());
    assert!(got.get("message").is_none());
    // null data is an empty payload.
    let got = evaluation_finished_data(&Value::Null, SloInput::Missing, &[]);
    assert_eq!(
        got["message"],
        "no evaluation performed by lighthouse because no SLO file configured for project "
    );
    assert!(got.get("project").is_none());
}

#[test]
fn previous_events_given_as_data_are_compared_but_not_listed() {
    let text = "comparison: {compare_with: several_results, number_of_comparison_results: 3}\nobjectives:\n  - sli: rt\n    pass: [{criteria: ['<=+10%']}]\ntotal_score: {pass: '90%'}\n";
    let prev = [
        previous("", "pass", &[("rt", 100.0)]),
        previous("e2", "pass", &[("rt", 100.0)]),
    ];
    let got = finished(text, json!([ok("rt", 120.0)]), &prev);
    assert_eq!(got["evaluation"]["comparedEvents"], json!(["e2"]));
    assert_eq!(got["result"], "fail");
    assert_eq!(
        got["evaluation"]["indicatorResults"][0]["passTargets"][0]["targetValue"],
        json!(110)
    );
}

#[test]
fn non_finite_numbers_become_null_instead_of_failing_the_event() {
    let text = "objectives:\n  - sli: rt\n    pass: [{criteria: ['<inf']}]\n    warning: [{criteria: ['<=+100%']}]\ntotal_score: {pass: '90%'}\n";
    let prev = [previous("e", "pass", &[("rt", f64::MAX)])];
    let got = finished(text, json!([ok("rt", 1.0)]), &prev);
    let r = &got["evaluation"]["indicatorResults"][0];
    assert_eq!(r["passTargets"][0]["targetValue"], Value::Null);
    assert_eq!(r["warningTargets"][0]["targetValue"], Value::Null);
    assert_eq!(r["value"]["comparedValue"], json!(f64::MAX));
    assert_eq!(got["evaluation"]["score"], 100);
}

#[test]
fn a_blank_slo_file_is_not_missing_and_lacks_a_target_score() {
    // Only an empty file counts as missing in Keptn; blank text parses.
    let got = finished("  \n", json!([ok("rt", 1.0)]), &[]);
    assert_eq!(got["status"], "errored");
    assert_eq!(got["message"], "no target score defined");
    assert_eq!(got["evaluation"]["sloFileContent"], b64("  \n"));
}

#[test]
fn without_a_comparison_block_only_the_newest_evaluation_is_compared() {
    let text = "objectives:\n  - sli: rt\n    pass: [{criteria: ['<=+10%']}]\ntotal_score: {pass: '90%'}\n";
    let prev = [
        previous("newest", "fail", &[("rt", 100.0)]),
        previous("older", "pass", &[("rt", 300.0)]),
    ];
    let got = finished(text, json!([ok("rt", 105.0)]), &prev);
    assert_eq!(got["evaluation"]["comparedEvents"], json!(["newest"]));
    let r = &got["evaluation"]["indicatorResults"][0];
    assert_eq!(r["value"]["comparedValue"], json!(100));
    assert_eq!(r["passTargets"][0]["targetValue"], json!(110));
    assert_eq!(got["result"], "pass");
}

#[test]
fn an_slo_parsed_by_the_caller_scores_exactly_as_its_text() {
    let values = json!([ok("response_time_p95", 260.0), ok("throughput", 900.0)]);
    let prev = [
        previous("p1", "pass", &[("response_time_p95", 200.0)]),
        previous("p2", "pass", &[("response_time_p95", 240.0)]),
    ];
    let parsed = slo(CARTS_SLO);
    let data = get_sli_data(values);
    assert_eq!(
        evaluation_finished_data(
            &data,
            SloInput::Parsed {
                text: CARTS_SLO,
                slo: &parsed
            },
            &prev
        ),
        evaluation_finished_data(&data, SloInput::Text(CARTS_SLO), &prev)
    );
    assert_eq!(
        evaluation_finished_data(
            &data,
            SloInput::Parsed {
                text: "",
                slo: &parsed
            },
            &prev
        ),
        evaluation_finished_data(&data, SloInput::Missing, &prev),
        "an empty file is no file, parsed or not"
    );
}
