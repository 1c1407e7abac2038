//! `keelson evaluate`, the offline quality gate, run as a process against the
//! fixtures in `events-fixtures/slo/`: its JSON and table output and its exit
//! codes (0 pass or warning, 1 fail, 2 unusable input).

use base64::Engine as _;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// The path of a fixture; `include_str!` makes a missing one a build error.
macro_rules! fixture {
    ($name:literal) => {{
        const _: &str = include_str!(concat!("../events-fixtures/slo/", $name));
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../events-fixtures/slo/",
            $name
        )
    }};
}

/// The `keelson` binary, which cargo builds for this test (a test target of the
/// `keelson` package).
fn keelson() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keelson"))
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// stdout as the JSON document it must be.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// `keelson evaluate <args>`.
fn evaluate(args: &[&str]) -> Run {
    let out = Command::new(keelson())
        .arg("evaluate")
        .args(args)
        .output()
        .expect("keelson runs");
    Run {
        code: out.status.code().expect("keelson exits, it is not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn base64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

const CARTS_SLO: &str = fixture!("carts.slo.yaml");
const CARTS_EVENT: &str = fixture!("carts.get-sli.finished.json");
const CARTS_DATA: &str = fixture!("carts.get-sli.finished.data.json");
const CARTS_VALUES: &str = fixture!("carts.values.json");

/// The indicator results of `carts.slo.yaml` for the values of the carts fixtures.
fn carts_indicator_results() -> Value {
    json!([
        {"score": 0.5, "status": "warning", "displayName": "Response time P95", "keySli": false,
         "value": {"metric": "response_time_p95", "value": 700, "comparedValue": 0,
                   "success": true},
         "passTargets": [{"criteria": "<=+10%", "targetValue": 0, "violated": false},
                         {"criteria": "<600", "targetValue": 600, "violated": true}],
         "warningTargets": [{"criteria": "<=800", "targetValue": 800, "violated": false}]},
        {"score": 0, "status": "info", "displayName": "", "keySli": false,
         "value": {"metric": "throughput", "value": 42, "comparedValue": 0, "success": true},
         "passTargets": [], "warningTargets": []},
        {"score": 3, "status": "pass", "displayName": "Error rate", "keySli": true,
         "value": {"metric": "error_rate", "value": 0.5, "comparedValue": 0, "success": true},
         "passTargets": [{"criteria": "<=1", "targetValue": 1, "violated": false}],
         "warningTargets": null}
    ])
}

#[test]
fn a_passing_gate_exits_0_and_prints_the_evaluation_finished_data() {
    let run = evaluate(&["--slo", CARTS_SLO, "--sli", CARTS_EVENT]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr, "");
    let slo = include_str!("../events-fixtures/slo/carts.slo.yaml");
    assert_eq!(
        run.json(),
        json!({
            "project": "sockshop", "stage": "staging", "service": "carts",
            "labels": {"build": "7"}, "status": "succeeded", "result": "pass",
            "evaluation": {
                "timeStart": "2026-01-01T11:50:00.000Z", "timeEnd": "2026-01-01T11:55:00.000Z",
                "result": "pass", "score": 87.5, "sloFileContent": base64(slo),
                "indicatorResults": carts_indicator_results()
            }
        })
    );
}

#[test]
fn a_warning_exits_0_unless_warnings_fail_the_gate() {
    let values = fixture!("carts-warning.values.json");
    let run = evaluate(&["--slo", CARTS_SLO, "--sli", values]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let data = run.json();
    assert_eq!(data["result"], "warning");
    assert_eq!(data["evaluation"]["result"], "warning");
    assert_eq!(data["evaluation"]["score"], 75);
    assert_eq!(
        data["message"],
        "Evaluation returned a warning: the calculated score of 75 is close to the warning target value of 75"
    );
    assert_eq!(
        data["evaluation"]["indicatorResults"][0]["status"], "fail",
        "900 is neither below 600 nor below 800"
    );

    let strict = evaluate(&["--slo", CARTS_SLO, "--sli", values, "--fail-on-warning"]);
    assert_eq!(strict.code, 1, "{}", strict.stderr);
    assert_eq!(
        strict.json(),
        data,
        "the same evaluation, only the exit code differs"
    );
    assert_eq!(
        evaluate(&[
            "--slo",
            CARTS_SLO,
            "--sli",
            CARTS_VALUES,
            "--fail-on-warning"
        ])
        .code,
        0,
        "a pass still passes"
    );
}

#[test]
fn a_relative_criterion_fails_the_gate_against_the_previous_evaluations() {
    let slo = fixture!("relative.slo.yaml");
    let values = fixture!("relative.values.json");
    let run = evaluate(&[
        "--slo",
        slo,
        "--sli",
        values,
        "--previous",
        fixture!("previous.json"),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stderr, "");
    let data = run.json();
    assert_eq!(data["status"], "succeeded");
    assert_eq!(data["result"], "fail");
    assert_eq!(data["evaluation"]["score"], 50);
    assert_eq!(
        data["message"],
        "Evaluation failed since the calculated score of 50 is below the warning value of 75"
    );
    assert_eq!(
        data["evaluation"]["comparedEvents"],
        json!(["prev-a", "prev-c", "prev-d"]),
        "the last three that passed, newest first; the failed prev-b is left out"
    );
    assert_eq!(
        data["evaluation"]["indicatorResults"][0],
        json!({"score": 0, "status": "fail", "displayName": "Response time P95", "keySli": false,
               "value": {"metric": "response_time_p95", "value": 500, "comparedValue": 300,
                         "success": true},
               "passTargets": [{"criteria": "<=+10%", "targetValue": 330, "violated": true}],
               "warningTargets": null})
    );
    assert_eq!(data["evaluation"]["indicatorResults"][1]["status"], "pass");

    // Nothing to compare with: a relative criterion holds.
    let alone = evaluate(&["--slo", slo, "--sli", values]);
    assert_eq!(alone.code, 0, "{}", alone.stderr);
    let data = alone.json();
    assert_eq!(data["result"], "pass");
    assert_eq!(data["evaluation"]["score"], 100);
    assert_eq!(data["evaluation"].get("comparedEvents"), None);
    assert_eq!(
        data["evaluation"]["indicatorResults"][0]["value"]["comparedValue"],
        0
    );
}

#[test]
fn previous_evaluations_given_as_their_data_compare_the_same_but_name_no_events() {
    let events: Vec<Value> =
        serde_json::from_str(include_str!("../events-fixtures/slo/previous.json")).unwrap();
    let data: Vec<&Value> = events.iter().map(|e| &e["data"]).collect();
    let dir = tempfile::tempdir().unwrap();
    let previous = dir.path().join("previous-data.json");
    std::fs::write(&previous, serde_json::to_string(&data).unwrap()).unwrap();
    let args = |previous: &str| {
        let slo = fixture!("relative.slo.yaml");
        let values = fixture!("relative.values.json");
        evaluate(&["--slo", slo, "--sli", values, "--previous", previous])
    };
    let (from_events, from_data) = (
        args(fixture!("previous.json")),
        args(previous.to_str().unwrap()),
    );
    assert_eq!(from_data.code, 1, "{}", from_data.stderr);
    let (mut from_events, from_data) = (from_events.json(), from_data.json());
    assert_eq!(from_data["evaluation"].get("comparedEvents"), None);
    from_events["evaluation"]
        .as_object_mut()
        .unwrap()
        .remove("comparedEvents");
    assert_eq!(from_data, from_events);
}

#[test]
fn an_slo_without_a_total_score_exits_2_with_the_errored_evaluation() {
    let slo = fixture!("no-total-score.slo.yaml");
    let run = evaluate(&["--slo", slo, "--sli", CARTS_VALUES]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let data = run.json();
    assert_eq!(data["status"], "errored");
    assert_eq!(data["result"], "fail");
    assert_eq!(data["message"], "no target score defined");
    assert_eq!(data["evaluation"]["result"], "fail");
    assert_eq!(
        run.stderr.trim(),
        format!(
            "Error: the evaluation of --slo {slo} with --sli {CARTS_VALUES} errored: no target score defined"
        )
    );
    assert_eq!(
        data["evaluation"]["sloFileContent"],
        base64(include_str!(
            "../events-fixtures/slo/no-total-score.slo.yaml"
        ))
    );
}

#[test]
fn an_empty_slo_file_is_unusable_input_not_a_silent_pass() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("slo.yaml");
    std::fs::write(&empty, "\n  \n").unwrap();
    let run = evaluate(&["--slo", empty.to_str().unwrap(), "--sli", CARTS_VALUES]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr.trim(),
        format!("Error: --slo {}: the file is empty", empty.display())
    );
}

#[test]
fn output_into_a_closed_pipe_does_not_panic_and_keeps_the_exit_code() {
    use std::process::Stdio;
    let mut child = Command::new(keelson())
        .args(["evaluate", "--slo", CARTS_SLO, "--sli", CARTS_VALUES])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn the_three_sli_shapes_give_the_same_evaluation() {
    let [event, data, values] = [CARTS_EVENT, CARTS_DATA, CARTS_VALUES]
        .map(|sli| evaluate(&["--slo", CARTS_SLO, "--sli", sli]));
    for run in [&event, &data, &values] {
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    assert_eq!(
        event.stdout, data.stdout,
        "a CloudEvent is evaluated as its data"
    );
    let verdict = |v: Value| {
        json!({"status": v["status"], "result": v["result"], "message": v["message"],
               "evaluationResult": v["evaluation"]["result"], "score": v["evaluation"]["score"],
               "indicatorResults": v["evaluation"]["indicatorResults"]})
    };
    let from_values = values.json();
    assert_eq!(verdict(from_values.clone()), verdict(event.json()));
    assert_eq!(
        from_values["evaluation"]["indicatorResults"],
        carts_indicator_results()
    );
    assert_eq!(
        from_values.get("project"),
        None,
        "a bare list names no project"
    );
}

#[test]
fn table_format_prints_a_row_per_indicator_and_the_score_line() {
    let run = evaluate(&[
        "--slo",
        CARTS_SLO,
        "--sli",
        CARTS_EVENT,
        "--format",
        "table",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let cells = |line: &str| {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cells(lines[0]),
        ["SLI", "value", "compared", "pass", "warning", "status", "score"]
    );
    assert_eq!(
        cells(lines[1]),
        [
            "Response time P95",
            "700",
            "0",
            "<=+10% (0) ✓, <600 (600) ✗",
            "<=800 (800) ✓",
            "warning",
            "0.5"
        ]
    );
    assert_eq!(
        cells(lines[2]),
        ["throughput", "42", "0", "info", "0"],
        "an informational objective has blank pass and warning cells"
    );
    assert_eq!(
        cells(lines[3]),
        [
            "Error rate (key)",
            "0.5",
            "0",
            "<=1 (1) ✓",
            "-",
            "pass",
            "3"
        ]
    );
    assert_eq!(lines[4], "");
    assert_eq!(lines[5], "score 87.5  result pass  status succeeded");
    assert_eq!(lines.len(), 6, "{}", run.stdout);
}

#[test]
fn unusable_input_exits_2_with_a_message_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let missing = missing.to_str().unwrap();
    let invalid = fixture!("invalid.values.json");
    let broken = fixture!("broken.slo.yaml");
    let not_a_number = fixture!("not-a-number.values.json");
    let not_a_list = fixture!("previous-not-a-list.json");
    let cases: [(&[&str], String); 6] = [
        (
            &["--slo", CARTS_SLO, "--sli", missing],
            format!("--sli {missing}: cannot read it:"),
        ),
        (
            &["--slo", missing, "--sli", CARTS_VALUES],
            format!("--slo {missing}: cannot read it:"),
        ),
        (
            &["--slo", CARTS_SLO, "--sli", invalid],
            format!("--sli {invalid}: not valid JSON:"),
        ),
        (
            &["--slo", broken, "--sli", CARTS_VALUES],
            format!("--slo {broken}: slo.yaml is not a valid SLO file:"),
        ),
        (
            &["--slo", CARTS_SLO, "--sli", not_a_number],
            format!(
                "--sli {not_a_number}: indicator value 0 (response_time_p95): value \"700ms\" is not a number"
            ),
        ),
        (
            &["--slo", CARTS_SLO, "--sli", CARTS_VALUES, "--previous", not_a_list],
            format!(
                "--previous {not_a_list}: expected a JSON list of evaluation.finished events (newest first)"
            ),
        ),
    ];
    for (args, want) in cases {
        let run = evaluate(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{args:?}");
        let message = run.stderr.trim_end();
        assert!(
            message.starts_with(&format!("Error: {want}")),
            "{args:?}:\n  want: Error: {want}\n  got:  {message}"
        );
        assert_eq!(message.lines().count(), 1, "one line: {message}");
    }
}
