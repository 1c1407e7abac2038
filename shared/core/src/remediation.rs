//! The remediation service's rules (spec §5.2): `remediation.yaml`
//! (`spec.keptn.sh/0.1.4`) and the answer to `get-action.triggered`.
//!
//! The action is `actionsOnOpen[actionIndex]` of the first remediation whose
//! `problemType` equals the problem's root cause, else its title, else
//! `default`; the answer carries it and `actionIndex + 1`, which the shipyard
//! merges into the next remediation loop (the later number wins in Keelson's
//! merge, so each loop takes the next action).

use crate::event::{task_type, KeptnEvent};
use crate::timestamp::Timestamp;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// `source` of the events the remediation function emits (Keptn's service name).
pub const SOURCE: &str = "remediation-service";

/// The only `apiVersion` of remediation.yaml Keptn accepted.
pub const SPEC_VERSION: &str = "spec.keptn.sh/0.1.4";

/// The resource: service level, or stage level for a problem without a service.
pub const REMEDIATION_URI: &str = "remediation.yaml";

/// A parsed remediation.yaml.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Remediation {
    /// Must be [`SPEC_VERSION`].
    #[serde(default)]
    pub api_version: String,
    /// The remediations.
    #[serde(default)]
    pub spec: Spec,
}

/// `spec` of remediation.yaml.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Spec {
    /// One entry per problem type.
    #[serde(default)]
    pub remediations: Vec<ProblemRemediation>,
}

/// The actions for one problem type.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProblemRemediation {
    /// Matched against the problem's root cause, then its title; `default` matches any.
    #[serde(default)]
    pub problem_type: String,
    /// The actions, tried one per remediation loop.
    #[serde(default)]
    pub actions_on_open: Vec<Action>,
}

/// One action.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Action {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// The action, for the executor (e.g. `scaling`).
    #[serde(default)]
    pub action: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Any value the executor needs.
    #[serde(default)]
    pub value: Value,
}

/// Parses remediation.yaml; the error is the message the answer carries.
pub fn parse(text: &str) -> Result<Remediation, String> {
    let r: Remediation = serde_yaml_ng::from_str(text)
        .map_err(|e| format!("could not parse remediation.yaml: {e}"))?;
    if r.api_version != SPEC_VERSION {
        return Err(format!(
            "remediation.yaml file does not conform to remediation spec {SPEC_VERSION}"
        ));
    }
    Ok(r)
}

/// The action index a `get-action.triggered` asks for: `get-action.actionIndex`,
/// else a top-level `actionIndex` (older clients), else 0.
pub fn action_index(data: &Value) -> i64 {
    data.pointer("/get-action/actionIndex")
        .or_else(|| data.get("actionIndex"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// The next action for `problem` (`{problemTitle, rootCause, …}`), or the
/// message saying why there is none (Keptn's words, with the index and the
/// problem in the order the sentence needs — Keptn swapped them).
pub fn next_action(r: &Remediation, problem: &Value, index: i64) -> Result<Action, String> {
    let field = |k: &str| {
        problem
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (root_cause, title) = (field("rootCause"), field("problemTitle"));
    let problem_text = match (root_cause, title) {
        (Some(rc), _) => format!("root cause {rc}"),
        (None, Some(t)) => format!("problem title {t}"),
        (None, None) => "problem type default".to_string(),
    };
    let find = |ty: Option<&str>| {
        ty.and_then(|ty| r.spec.remediations.iter().find(|p| p.problem_type == ty))
    };
    let Some(found) = find(root_cause)
        .or_else(|| find(title))
        .or_else(|| find(Some("default")))
    else {
        return Err(format!("unable to find action for {problem_text}"));
    };
    usize::try_from(index)
        .ok()
        .and_then(|i| found.actions_on_open.get(i))
        .cloned()
        .ok_or_else(|| format!("there is no action with index {index} for {problem_text}"))
}

/// `project`, `stage`, `service` and `labels` of the trigger.
fn common_data(trigger: &KeptnEvent) -> Map<String, Value> {
    crate::event::reply_data(&trigger.data)
}

fn reply(trigger: &KeptnEvent, kind: &str, data: Map<String, Value>, now: Timestamp) -> KeptnEvent {
    trigger.reply(
        SOURCE,
        task_type("get-action", kind),
        &format!("get-action.{kind}"),
        Value::Object(data),
        now,
    )
}

/// What the remediation function read for a trigger.
#[derive(Debug, Clone, PartialEq)]
pub enum File<'a> {
    /// The text of remediation.yaml.
    Text(&'a str),
    /// Not there (or not readable: the reason is logged, Keptn's message is sent).
    Missing,
}

/// `get-action.triggered` → `get-action.started` and `get-action.finished`
/// with the action and the next index, or with the reason there is none:
/// a missing or unparseable file is `errored`/`fail`; no action for the
/// problem (or no more actions) is `succeeded`/`fail`, which ends the
/// remediation sequence.
pub fn on_get_action(
    trigger: &KeptnEvent,
    file: File<'_>,
    now: Timestamp,
) -> (KeptnEvent, KeptnEvent) {
    let mut d = common_data(trigger);
    d.insert("status".into(), json!("succeeded"));
    let started = reply(trigger, "started", d, now);

    let mut d = common_data(trigger);
    let stage = trigger.stage().unwrap_or_default();
    let service = trigger.service().unwrap_or_default();
    let outcome = match file {
        File::Missing => Err((
            "errored",
            format!("Could not get remediation.yaml file for services {service} in stage {stage}."),
        )),
        File::Text(t) => match parse(t) {
            Err(_) => Err((
                "errored",
                "Could not parse remediation.yaml file. Please validate it against the specification."
                    .to_string(),
            )),
            Ok(r) => {
                let index = action_index(&trigger.data);
                let problem = trigger.data.get("problem").cloned().unwrap_or(Value::Null);
                next_action(&r, &problem, index)
                    .map(|a| (a, index))
                    .map_err(|m| ("succeeded", m))
            }
        },
    };
    match outcome {
        Ok((a, index)) => {
            d.insert("status".into(), json!("succeeded"));
            d.insert("result".into(), json!("pass"));
            d.insert("message".into(), json!(""));
            d.insert(
                "action".into(),
                json!({"name": a.name, "action": a.action, "description": a.description, "value": a.value}),
            );
            d.insert("get-action".into(), json!({"actionIndex": index + 1}));
        }
        Err((status, message)) => {
            d.insert("status".into(), json!(status));
            d.insert("result".into(), json!("fail"));
            d.insert("message".into(), json!(message));
        }
    }
    (started, reply(trigger, "finished", d, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"apiVersion: spec.keptn.sh/0.1.4
kind: Remediation
metadata:
  name: carts-remediation
spec:
  remediations:
    - problemType: Response time degradation
      actionsOnOpen:
        - name: Scale up
          action: scaling
          description: Scale up by one replica
          value: "1"
        - name: Toggle feature
          action: featuretoggle
          description: Turn the promotion off
          value:
            EnablePromotion: "off"
    - problemType: HighErrorRate
      actionsOnOpen:
        - {name: Roll back, action: rollback}
    - problemType: default
      actionsOnOpen:
        - {name: Page someone, action: page, value: 3}
"#;

    fn trigger(data: Value) -> KeptnEvent {
        let mut e = KeptnEvent::new(
            "ga-1".into(),
            "shipyard-controller",
            task_type("get-action", "triggered"),
            "ctx",
            data,
            Timestamp::from_millis(5),
        );
        e.gitcommitid = Some("c1".into());
        e
    }

    fn base(problem: Value, get_action: Value) -> Value {
        let mut d =
            json!({"project": "p", "stage": "production", "service": "carts", "problem": problem});
        if !get_action.is_null() {
            d["get-action"] = get_action;
        }
        d
    }

    #[test]
    fn matching_and_indexing_table() {
        let r = parse(FILE).unwrap();
        // (problem, index, expected action name or error message)
        let cases: Vec<(Value, i64, Result<&str, &str>)> = vec![
            (
                json!({"rootCause": "Response time degradation", "problemTitle": "HighErrorRate"}),
                0,
                Ok("Scale up"),
            ),
            (
                json!({"rootCause": "Response time degradation"}),
                1,
                Ok("Toggle feature"),
            ),
            (
                json!({"rootCause": "Response time degradation"}),
                2,
                Err("there is no action with index 2 for root cause Response time degradation"),
            ),
            // Root cause without a match: the title, then default.
            (
                json!({"rootCause": "disk full", "problemTitle": "HighErrorRate"}),
                0,
                Ok("Roll back"),
            ),
            (
                json!({"rootCause": "disk full", "problemTitle": "nothing known"}),
                0,
                Ok("Page someone"),
            ),
            (
                json!({"problemTitle": "HighErrorRate"}),
                1,
                Err("there is no action with index 1 for problem title HighErrorRate"),
            ),
            (json!({}), 0, Ok("Page someone")),
            (
                json!({}),
                -1,
                Err("there is no action with index -1 for problem type default"),
            ),
        ];
        for (problem, index, want) in cases {
            let got = next_action(&r, &problem, index).map(|a| a.name);
            assert_eq!(
                got.as_deref().map_err(String::as_str),
                want,
                "{problem} #{index}"
            );
        }
        let no_default =
            parse(&FILE.replace("problemType: default", "problemType: other")).unwrap();
        assert_eq!(
            next_action(&no_default, &json!({"rootCause": "disk full"}), 0),
            Err("unable to find action for root cause disk full".into())
        );
        assert_eq!(
            next_action(&no_default, &json!({}), 0),
            Err("unable to find action for problem type default".into())
        );
    }

    #[test]
    fn the_file_must_be_spec_0_1_4() {
        assert_eq!(
            parse(&FILE.replace("0.1.4", "0.1.3")),
            Err(
                "remediation.yaml file does not conform to remediation spec spec.keptn.sh/0.1.4"
                    .into()
            )
        );
        assert!(parse("spec: [")
            .unwrap_err()
            .starts_with("could not parse remediation.yaml"));
    }

    #[test]
    fn the_answer_carries_the_action_and_the_next_index() {
        let t = trigger(base(
            json!({"rootCause": "Response time degradation"}),
            json!({"actionIndex": 1}),
        ));
        let (started, finished) = on_get_action(&t, File::Text(FILE), Timestamp::from_millis(9));
        assert_eq!(started.ty, "sh.keptn.event.get-action.started");
        assert_eq!(started.data["status"], "succeeded");
        assert_eq!(finished.ty, "sh.keptn.event.get-action.finished");
        assert_eq!(finished.triggeredid.as_deref(), Some("ga-1"));
        assert_eq!(finished.gitcommitid.as_deref(), Some("c1"));
        assert_eq!(finished.source, SOURCE);
        assert_eq!(finished.data["status"], "succeeded");
        assert_eq!(finished.data["result"], "pass");
        assert_eq!(
            finished.data["action"],
            json!({"name": "Toggle feature", "action": "featuretoggle",
                   "description": "Turn the promotion off", "value": {"EnablePromotion": "off"}})
        );
        assert_eq!(finished.data["get-action"]["actionIndex"], 2);
        assert_eq!(finished.data["service"], "carts");
        // No index at all: the first action; a top-level index is read too.
        let t = trigger(base(json!({"rootCause": "HighErrorRate"}), Value::Null));
        let (_, f) = on_get_action(&t, File::Text(FILE), Timestamp::from_millis(9));
        assert_eq!(f.data["action"]["name"], "Roll back");
        assert_eq!(f.data["get-action"]["actionIndex"], 1);
        assert_eq!(action_index(&json!({"actionIndex": 3})), 3);
    }

    #[test]
    fn failures_end_the_remediation_with_keptns_messages() {
        let t = trigger(base(
            json!({"rootCause": "HighErrorRate"}),
            json!({"actionIndex": 1}),
        ));
        let cases = [
            (File::Text(FILE), "succeeded", "there is no action with index 1 for root cause HighErrorRate"),
            (File::Missing, "errored", "Could not get remediation.yaml file for services carts in stage production."),
            (File::Text("apiVersion: v1\n"), "errored", "Could not parse remediation.yaml file. Please validate it against the specification."),
            (File::Text(":\n  - ["), "errored", "Could not parse remediation.yaml file. Please validate it against the specification."),
        ];
        for (file, status, message) in cases {
            let (_, f) = on_get_action(&t, file.clone(), Timestamp::from_millis(9));
            assert_eq!(f.data["status"], status, "{file:?}");
            assert_eq!(f.data["result"], "fail", "{file:?}");
            assert_eq!(f.data["message"], message, "{file:?}");
            assert!(f.data.get("action").is_none());
        }
    }

    #[test]
    fn ids_are_stable_under_redelivery() {
        let t = trigger(base(json!({}), Value::Null));
        let a = on_get_action(&t, File::Text(FILE), Timestamp::from_millis(1));
        let b = on_get_action(&t, File::Text(FILE), Timestamp::from_millis(2));
        assert_eq!((a.0.id, a.1.id), (b.0.id, b.1.id));
    }
}
