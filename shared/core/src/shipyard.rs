//! Shipyard files (`spec.keptn.sh/0.2.x`, spec §2.1): parsing and validation.
//! Errors name the field (`spec.stages[1].sequences[0].tasks`) and the problem.

use crate::error::CoreError;
use crate::project::validate_name;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A parsed, validated shipyard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shipyard {
    /// `spec.keptn.sh/0.2.x`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// `Shipyard`.
    pub kind: String,
    /// Metadata (name).
    #[serde(default)]
    pub metadata: Metadata,
    /// Stages and sequences.
    pub spec: Spec,
}

/// `metadata`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// `metadata.name`.
    #[serde(default)]
    pub name: String,
}

/// `spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Stages in order.
    #[serde(default)]
    pub stages: Vec<Stage>,
}

/// A stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// Stage name.
    pub name: String,
    /// Its sequences.
    #[serde(default)]
    pub sequences: Vec<Sequence>,
}

/// A task sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sequence {
    /// Sequence name.
    pub name: String,
    /// Follow-up triggers.
    #[serde(default, rename = "triggeredOn", skip_serializing_if = "Vec::is_empty")]
    pub triggered_on: Vec<TriggeredOn>,
    /// Ordered tasks.
    #[serde(default)]
    pub tasks: Vec<Task>,
}

/// A `triggeredOn` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggeredOn {
    /// `<stage>.<sequence>.finished`.
    pub event: String,
    /// Optional selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
}

/// `selector: {match: {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Selector {
    /// `result: fail` or `<task>.result: fail`.
    #[serde(default, rename = "match")]
    pub matches: BTreeMap<String, String>,
}

/// A task of a sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Task name (`deployment`, `test`, …; any valid name).
    pub name: String,
    /// Go duration delaying the task's `.triggered`.
    #[serde(
        default,
        rename = "triggeredAfter",
        skip_serializing_if = "Option::is_none"
    )]
    pub triggered_after: Option<String>,
    /// Merged into `data.<task>` of the task's `.triggered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Value>,
}

impl Task {
    /// `triggeredAfter` in milliseconds (0 when unset); validated at parse time.
    pub fn triggered_after_ms(&self) -> i64 {
        self.triggered_after
            .as_deref()
            .and_then(|d| parse_go_duration(d).ok())
            .unwrap_or(0)
    }
}

/// A sequence that a `<stage>.<sequence>.finished` fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowUp {
    /// Stage of the follow-up sequence.
    pub stage: String,
    /// Name of the follow-up sequence.
    pub sequence: String,
    /// Its selector, if any.
    pub selector: Option<Selector>,
}

impl FollowUp {
    /// Whether a finished sequence with `result`, whose last executed task was
    /// `last_task`, fires this follow-up (spec §2.5): no selector → pass or
    /// warning; else `match.result` or `match["<last task>.result"]` equals the
    /// result string.
    pub fn fires(&self, result: &str, last_task: Option<&str>) -> bool {
        match &self.selector {
            None => result == "pass" || result == "warning",
            Some(sel) if sel.matches.is_empty() => result == "pass" || result == "warning",
            Some(sel) => {
                sel.matches.get("result").is_some_and(|r| r == result)
                    || last_task.is_some_and(|t| {
                        sel.matches
                            .get(&format!("{t}.result"))
                            .is_some_and(|r| r == result)
                    })
            }
        }
    }
}

impl Shipyard {
    /// Parses YAML (or JSON) text and validates it.
    pub fn parse(text: &str) -> Result<Shipyard, CoreError> {
        if text.trim().is_empty() {
            return Err(CoreError::invalid("shipyard", "is empty"));
        }
        let raw: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
            .map_err(|e| CoreError::invalid("shipyard", format!("not valid YAML: {e}")))?;
        let sy: Shipyard = serde_yaml_ng::from_value(raw)
            .map_err(|e| CoreError::invalid("shipyard", e.to_string()))?;
        sy.validate()?;
        Ok(sy)
    }

    /// Checks the rules Keptn checks, plus the ones its users tripped on.
    pub fn validate(&self) -> Result<(), CoreError> {
        let version = self
            .api_version
            .strip_prefix("spec.keptn.sh/")
            .ok_or_else(|| {
                CoreError::invalid(
                    "apiVersion",
                    format!(
                        "{:?} is not supported: use spec.keptn.sh/0.2.x",
                        self.api_version
                    ),
                )
            })?;
        if !version_at_least_0_2(version) {
            return Err(CoreError::invalid(
                "apiVersion",
                format!(
                    "{:?} is not supported: use spec.keptn.sh/0.2.x",
                    self.api_version
                ),
            ));
        }
        if self.kind != "Shipyard" {
            return Err(CoreError::invalid(
                "kind",
                format!("must be \"Shipyard\", got {:?}", self.kind),
            ));
        }
        if self.spec.stages.is_empty() {
            return Err(CoreError::invalid(
                "spec.stages",
                "at least one stage is required",
            ));
        }
        let mut stage_names = std::collections::HashSet::new();
        for (si, stage) in self.spec.stages.iter().enumerate() {
            let f = format!("spec.stages[{si}]");
            validate_name(&format!("{f}.name"), &stage.name)?;
            if !stage_names.insert(stage.name.as_str()) {
                return Err(CoreError::invalid(
                    format!("{f}.name"),
                    format!("duplicate stage {:?}", stage.name),
                ));
            }
            let mut seq_names = std::collections::HashSet::new();
            for (qi, seq) in stage.sequences.iter().enumerate() {
                let f = format!("{f}.sequences[{qi}]");
                validate_name(&format!("{f}.name"), &seq.name)?;
                if !seq_names.insert(seq.name.as_str()) {
                    return Err(CoreError::invalid(
                        format!("{f}.name"),
                        format!(
                            "duplicate sequence {:?} in stage {:?}",
                            seq.name, stage.name
                        ),
                    ));
                }
                if seq.tasks.is_empty() {
                    return Err(CoreError::invalid(
                        format!("{f}.tasks"),
                        "a sequence needs at least one task",
                    ));
                }
                for (ti, task) in seq.tasks.iter().enumerate() {
                    let f = format!("{f}.tasks[{ti}]");
                    validate_name(&format!("{f}.name"), &task.name)?;
                    if let Some(d) = &task.triggered_after {
                        parse_go_duration(d)
                            .map_err(|r| CoreError::invalid(format!("{f}.triggeredAfter"), r))?;
                    }
                    if let Some(p) = &task.properties {
                        if !p.is_object() && !p.is_null() {
                            return Err(CoreError::invalid(
                                format!("{f}.properties"),
                                "must be a map",
                            ));
                        }
                    }
                }
                for (oi, on) in seq.triggered_on.iter().enumerate() {
                    let f = format!("{f}.triggeredOn[{oi}].event");
                    let parts: Vec<&str> = on.event.split('.').collect();
                    let ok = parts.len() == 3
                        && parts[2] == "finished"
                        && validate_name("", parts[0]).is_ok()
                        && validate_name("", parts[1]).is_ok();
                    if !ok {
                        return Err(CoreError::invalid(
                            f,
                            format!(
                                "{:?} must have the form <stage>.<sequence>.finished",
                                on.event
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Stage names in order.
    pub fn stage_names(&self) -> Vec<String> {
        self.spec.stages.iter().map(|s| s.name.clone()).collect()
    }

    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.spec.stages.iter().find(|s| s.name == name)
    }

    /// The sequence to run for `<stage>.<name>.triggered`: the stage's own, or
    /// the built-in one-task `evaluation` sequence (a user-defined one wins).
    pub fn find_sequence(&self, stage: &str, name: &str) -> Result<Sequence, String> {
        let st = self.stage(stage).ok_or_else(|| {
            format!("Unable to start sequence {name}: no stage with name {stage}")
        })?;
        if let Some(seq) = st.sequences.iter().find(|s| s.name == name) {
            return Ok(seq.clone());
        }
        if name == "evaluation" {
            return Ok(Sequence {
                name: "evaluation".into(),
                triggered_on: vec![],
                tasks: vec![Task {
                    name: "evaluation".into(),
                    triggered_after: None,
                    properties: None,
                }],
            });
        }
        Err(format!(
            "Unable to start sequence {name}: no task sequence with name {name} found in stage {stage}"
        ))
    }

    /// Every sequence (in any stage) with `triggeredOn: <stage>.<sequence>.finished`.
    pub fn follow_ups(&self, stage: &str, sequence: &str) -> Vec<FollowUp> {
        let want = format!("{stage}.{sequence}.finished");
        let mut out = Vec::new();
        for st in &self.spec.stages {
            for seq in &st.sequences {
                for on in &seq.triggered_on {
                    if on.event == want {
                        out.push(FollowUp {
                            stage: st.name.clone(),
                            sequence: seq.name.clone(),
                            selector: on.selector.clone(),
                        });
                    }
                }
            }
        }
        out
    }
}

fn version_at_least_0_2(v: &str) -> bool {
    let mut it = v.split('.');
    let major = it.next().and_then(|x| x.parse::<u64>().ok());
    let minor = it.next().and_then(|x| x.parse::<u64>().ok());
    let patch_ok = match it.next() {
        None => true,
        Some(p) => p.parse::<u64>().is_ok() && it.next().is_none(),
    };
    match (major, minor) {
        (Some(0), Some(m)) => m >= 2 && patch_ok,
        (Some(x), Some(_)) => x >= 1 && patch_ok,
        _ => false,
    }
}

/// Parses a Go duration (`10m`, `1h30m`, `1.5s`, `300ms`) into milliseconds.
pub fn parse_go_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a duration (examples: 30s, 10m, 1h30m)");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if t == "0" {
        return Ok(0);
    }
    let bytes = t.as_bytes();
    let mut i = 0;
    let mut total: f64 = 0.0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        if start == i {
            return Err(bad());
        }
        let num: f64 = t[start..i].parse().map_err(|_| bad())?;
        let ustart = i;
        while i < bytes.len() && !(bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let factor = match &t[ustart..i] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return Err(bad()),
        };
        total += num * factor;
    }
    if !total.is_finite() || total > 1e15 {
        return Err(bad());
    }
    Ok(total.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const THREE_STAGES: &str = r#"
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: shipyard-sockshop}
spec:
  stages:
    - name: dev
      sequences:
        - name: delivery
          tasks:
            - name: deployment
              properties: {deploymentstrategy: direct}
            - name: test
              properties: {teststrategy: functional}
            - name: release
    - name: hardening
      sequences:
        - name: delivery
          triggeredOn:
            - event: dev.delivery.finished
          tasks:
            - name: deployment
            - name: release
        - name: rollback
          triggeredOn:
            - event: hardening.delivery.finished
              selector: {match: {result: fail}}
          tasks:
            - name: rollback
    - name: production
      sequences:
        - name: delivery
          triggeredOn:
            - event: hardening.delivery.finished
          tasks:
            - name: approval
              properties: {pass: automatic, warning: manual}
            - name: deployment
              triggeredAfter: "1m30s"
            - name: release
"#;

    #[test]
    fn a_three_stage_shipyard_parses() {
        let sy = Shipyard::parse(THREE_STAGES).unwrap();
        assert_eq!(sy.stage_names(), vec!["dev", "hardening", "production"]);
        let seq = sy.find_sequence("production", "delivery").unwrap();
        assert_eq!(seq.tasks[1].triggered_after_ms(), 90_000);
        let fu = sy.follow_ups("hardening", "delivery");
        assert_eq!(fu.len(), 2);
        assert!(fu
            .iter()
            .any(|f| f.stage == "production" && f.fires("pass", None)));
        let rb = fu.iter().find(|f| f.sequence == "rollback").unwrap();
        assert!(rb.fires("fail", Some("release")) && !rb.fires("pass", None));
    }

    #[test]
    fn builtin_evaluation_sequence_exists_in_every_stage() {
        let sy = Shipyard::parse(THREE_STAGES).unwrap();
        let ev = sy.find_sequence("dev", "evaluation").unwrap();
        assert_eq!(ev.tasks.len(), 1);
        assert_eq!(ev.tasks[0].name, "evaluation");
        assert_eq!(
            sy.find_sequence("qa", "delivery").unwrap_err(),
            "Unable to start sequence delivery: no stage with name qa"
        );
        assert_eq!(
            sy.find_sequence("dev", "nope").unwrap_err(),
            "Unable to start sequence nope: no task sequence with name nope found in stage dev"
        );
    }

    #[test]
    fn selector_forms_table() {
        let sel = |pairs: &[(&str, &str)]| {
            Some(Selector {
                matches: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
        };
        let f = |selector| FollowUp {
            stage: "s".into(),
            sequence: "q".into(),
            selector,
        };
        let cases = [
            (f(None), "pass", Some("release"), true),
            (f(None), "warning", Some("release"), true),
            (f(None), "fail", Some("release"), false),
            (f(sel(&[("result", "fail")])), "fail", Some("x"), true),
            (f(sel(&[("result", "fail")])), "pass", Some("x"), false),
            // Keptn's documented example "failed" never matches the wire value "fail".
            (f(sel(&[("result", "failed")])), "fail", Some("x"), false),
            (
                f(sel(&[("evaluation.result", "fail")])),
                "fail",
                Some("evaluation"),
                true,
            ),
            (
                f(sel(&[("evaluation.result", "fail")])),
                "fail",
                Some("release"),
                false,
            ),
        ];
        for (fu, result, last, want) in cases {
            assert_eq!(fu.fires(result, last), want, "{fu:?} {result} {last:?}");
        }
    }

    #[test]
    fn validation_errors_name_the_field() {
        let cases = [
            ("apiVersion: spec.keptn.sh/0.1.7\nkind: Shipyard\nspec: {stages: [{name: dev}]}", "apiVersion"),
            ("apiVersion: v1\nkind: Shipyard\nspec: {stages: [{name: dev}]}", "apiVersion"),
            ("apiVersion: spec.keptn.sh/0.2.0\nkind: Pod\nspec: {stages: [{name: dev}]}", "kind"),
            ("apiVersion: spec.keptn.sh/0.2.0\nkind: Shipyard\nspec: {stages: []}", "spec.stages"),
            ("apiVersion: spec.keptn.sh/0.2.0\nkind: Shipyard\nspec: {stages: [{name: Dev}]}", "spec.stages[0].name"),
            ("apiVersion: spec.keptn.sh/0.2.0\nkind: Shipyard\nspec: {stages: [{name: dev},{name: dev}]}", "spec.stages[1].name"),
            ("apiVersion: spec.keptn.sh/0.2.0\nkind: Shipyard\nspec: {stages: [{name: dev, sequences: [{name: d, tasks: []}]}]}", "spec.stages[0].sequences[0].tasks"),
            ("apiVersion: spec.keptn.sh/0.2.0\nkind: Shipyard\nspec: {stages: [{name: dev, sequences: [{name: d, tasks: [{name: t, triggeredAfter: soon}]}]}]}", "spec.stages[0].sequences[0].tasks[0].triggeredAfter"),
            ("apiVersion: spec.keptn.sh/0.2.0\nkind: Shipyard\nspec: {stages: [{name: dev, sequences: [{name: d, tasks: [{name: t, properties: [1]}]}]}]}", "spec.stages[0].sequences[0].tasks[0].properties"),
            ("apiVersion: spec.keptn.sh/0.2.0\nkind: Shipyard\nspec: {stages: [{name: dev, sequences: [{name: d, triggeredOn: [{event: dev.x}], tasks: [{name: t}]}]}]}", "spec.stages[0].sequences[0].triggeredOn[0].event"),
            ("{{{", "shipyard"),
            ("", "shipyard"),
            ("kind: Shipyard", "shipyard"),
        ];
        for (text, field) in cases {
            match Shipyard::parse(text) {
                Err(CoreError::Invalid { field: f, reason }) => {
                    assert_eq!(f, field, "{text}: {reason}")
                }
                other => panic!("{text}: expected invalid {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn go_durations_table() {
        for (s, ms) in [
            ("10m", 600_000),
            ("1h30m", 5_400_000),
            ("1.5s", 1500),
            ("300ms", 300),
            ("0", 0),
            ("2h", 7_200_000),
        ] {
            assert_eq!(parse_go_duration(s), Ok(ms), "{s}");
        }
        for s in ["", "10", "m", "1x", "-5m", "1e400h"] {
            assert!(parse_go_duration(s).is_err(), "{s}");
        }
    }
}
