//! `keelson evaluate`: an SLO quality gate for CI pipelines, without a server,
//! through exactly the lighthouse's code path
//! ([`keelson_core::slo::evaluation_finished_data`]).

use keelson_core::slo::{self, SloInput};
use serde_json::{json, Value};
use std::path::Path;

/// Exit code of a passed gate (and of a warning without `--fail-on-warning`).
pub const EXIT_PASS: i32 = 0;
/// Exit code of a failed gate.
pub const EXIT_FAIL: i32 = 1;
/// Exit code of unusable input.
pub const EXIT_UNUSABLE: i32 = 2;

/// Input that cannot be evaluated; the message names the file and the problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Unusable(pub String);

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn read(flag: &str, path: &Path) -> Result<String, Unusable> {
    std::fs::read_to_string(path)
        .map_err(|e| Unusable(format!("{flag} {}: cannot read it: {e}", path.display())))
}

fn json_of(flag: &str, path: &Path, text: &str) -> Result<Value, Unusable> {
    serde_json::from_str(text)
        .map_err(|e| Unusable(format!("{flag} {}: not valid JSON: {e}", path.display())))
}

/// The `data` of a `get-sli.finished` from what `--sli` holds: the CloudEvent,
/// its `data`, or a bare list of indicator values.
pub fn sli_data(v: Value) -> Result<Value, String> {
    let data =
        match v {
            Value::Array(values) => json!({"get-sli": {"indicatorValues": values}}),
            Value::Object(mut o) => {
                if o.contains_key("specversion") || o.contains_key("type") {
                    match o.remove("data") {
                        Some(d @ Value::Object(_)) => d,
                        _ => return Err("the CloudEvent has no data object".into()),
                    }
                } else {
                    Value::Object(o)
                }
            }
            _ => return Err(
                "expected a get-sli.finished event, its data object or a list of indicator values"
                    .into(),
            ),
        };
    let values = data
        .pointer("/get-sli/indicatorValues")
        .ok_or("no get-sli.indicatorValues")?;
    let Value::Array(values) = values else {
        return Err("get-sli.indicatorValues is not a list".into());
    };
    for (i, v) in values.iter().enumerate() {
        let o = v
            .as_object()
            .ok_or_else(|| format!("indicator value {i} is not an object"))?;
        match o.get("metric") {
            Some(Value::String(m)) if !m.is_empty() => {}
            _ => return Err(format!("indicator value {i} has no metric name")),
        }
        match o.get("value") {
            None | Some(Value::Number(_)) => {}
            Some(other) => {
                return Err(format!(
                    "indicator value {i} ({}): value {other} is not a number",
                    o["metric"].as_str().unwrap_or_default()
                ))
            }
        }
        if let Some(s) = o.get("success").filter(|s| !s.is_boolean()) {
            return Err(format!(
                "indicator value {i}: success {s} is not true or false"
            ));
        }
    }
    Ok(data)
}

/// Evaluates the files; the `data` of the `evaluation.finished` lighthouse would send.
pub fn evaluate_files(
    slo_path: &Path,
    sli_path: &Path,
    previous_path: Option<&Path>,
) -> Result<Value, Unusable> {
    let slo_text = read("--slo", slo_path)?;
    // Lighthouse passes an evaluation without SLO objectives found; a gate
    // handed an empty file is more likely a templating mistake than intent.
    if slo_text.trim().is_empty() {
        return Err(Unusable(format!(
            "--slo {}: the file is empty",
            slo_path.display()
        )));
    }
    // An SLO that does not parse is unusable input here (lighthouse answers
    // it with an errored evaluation; a pipeline wants the file named).
    slo::parse(&slo_text).map_err(|e| Unusable(format!("--slo {}: {e}", slo_path.display())))?;
    let sli_text = read("--sli", sli_path)?;
    let sli = sli_data(json_of("--sli", sli_path, &sli_text)?)
        .map_err(|e| Unusable(format!("--sli {}: {e}", sli_path.display())))?;
    let previous = match previous_path {
        None => vec![],
        Some(p) => {
            let text = read("--previous", p)?;
            let v = json_of("--previous", p, &text)?;
            let Value::Array(list) = v else {
                return Err(Unusable(format!(
                    "--previous {}: expected a JSON list of evaluation.finished events (newest first)",
                    p.display()
                )));
            };
            slo::previous_from_values(&list)
                .map_err(|e| Unusable(format!("--previous {}: {e}", p.display())))?
        }
    };
    // compare_with, include_result_with_score and number_of_comparison_results
    // are applied to the list by evaluation_finished_data, as for lighthouse.
    Ok(slo::evaluation_finished_data(
        &sli,
        SloInput::Text(&slo_text),
        &previous,
    ))
}

/// The exit code of an evaluation result.
pub fn exit_code(data: &Value, fail_on_warning: bool) -> i32 {
    if data["status"] == "errored" {
        return EXIT_UNUSABLE;
    }
    match data["result"].as_str() {
        Some("pass") => EXIT_PASS,
        Some("warning") if !fail_on_warning => EXIT_PASS,
        _ => EXIT_FAIL,
    }
}

fn num(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::Null => "-".into(),
        o => o.to_string(),
    }
}

fn targets(v: &Value) -> String {
    let Some(list) = v.as_array() else {
        return "-".into();
    };
    list.iter()
        .map(|t| {
            format!(
                "{} ({}){}",
                t["criteria"].as_str().unwrap_or_default(),
                num(&t["targetValue"]),
                if t["violated"] == true {
                    " ✗"
                } else {
                    " ✓"
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A readable table of an evaluation result.
pub fn table(data: &Value) -> String {
    let rows: Vec<[String; 7]> = data
        .pointer("/evaluation/indicatorResults")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|r| {
                    let name = r["displayName"]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .or(r["value"]["metric"].as_str())
                        .unwrap_or_default();
                    let key = if r["keySli"] == true { " (key)" } else { "" };
                    let value = if r["value"]["success"] == true {
                        num(&r["value"]["value"])
                    } else {
                        "n/a".into()
                    };
                    [
                        format!("{name}{key}"),
                        value,
                        num(&r["value"]["comparedValue"]),
                        targets(&r["passTargets"]),
                        targets(&r["warningTargets"]),
                        r["status"].as_str().unwrap_or_default().to_string(),
                        num(&r["score"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let head = [
        "SLI", "value", "compared", "pass", "warning", "status", "score",
    ]
    .map(String::from);
    let mut widths = head.clone().map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String; 7]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            s.push_str(c);
            if i < 6 {
                s.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(&head)];
    out.extend(rows.iter().map(line));
    out.push(String::new());
    out.push(format!(
        "score {}  result {}  status {}",
        num(&data["evaluation"]["score"]),
        data["result"].as_str().unwrap_or("-"),
        data["status"].as_str().unwrap_or("-"),
    ));
    if let Some(m) = data["message"].as_str().filter(|m| !m.is_empty()) {
        out.push(m.to_string());
    }
    if let Some(c) = data
        .pointer("/evaluation/comparedEvents")
        .and_then(Value::as_array)
    {
        out.push(format!("compared with {} previous evaluation(s)", c.len()));
    }
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sli_input_is_accepted_in_its_three_shapes() {
        let values = json!([{"metric": "rt", "value": 1.5, "success": true}]);
        let from_list = sli_data(values.clone()).unwrap();
        assert_eq!(from_list["get-sli"]["indicatorValues"], values);
        let data =
            json!({"project": "p", "result": "pass", "get-sli": {"indicatorValues": values}});
        assert_eq!(sli_data(data.clone()).unwrap(), data);
        let event =
            json!({"specversion": "1.0", "type": "sh.keptn.event.get-sli.finished", "data": data});
        assert_eq!(sli_data(event).unwrap(), data);
    }

    #[test]
    fn unusable_sli_input_names_the_problem() {
        let cases = [
            (json!(42), "expected a get-sli.finished event"),
            (json!({"type": "x"}), "the CloudEvent has no data object"),
            (json!({"project": "p"}), "no get-sli.indicatorValues"),
            (json!({"get-sli": {"indicatorValues": 3}}), "is not a list"),
            (json!([7]), "indicator value 0 is not an object"),
            (
                json!([{"value": 1}]),
                "indicator value 0 has no metric name",
            ),
            (
                json!([{"metric": "rt", "value": "fast"}]),
                "indicator value 0 (rt): value \"fast\" is not a number",
            ),
            (
                json!([{"metric": "rt", "value": 1, "success": "yes"}]),
                "success \"yes\" is not true or false",
            ),
        ];
        for (input, want) in cases {
            let err = sli_data(input.clone()).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn exit_codes_follow_the_result() {
        let d = |status: &str, result: &str| json!({"status": status, "result": result});
        assert_eq!(exit_code(&d("succeeded", "pass"), false), EXIT_PASS);
        assert_eq!(exit_code(&d("succeeded", "warning"), false), EXIT_PASS);
        assert_eq!(exit_code(&d("succeeded", "warning"), true), EXIT_FAIL);
        assert_eq!(exit_code(&d("succeeded", "fail"), false), EXIT_FAIL);
        assert_eq!(exit_code(&d("errored", "fail"), false), EXIT_UNUSABLE);
    }
}
