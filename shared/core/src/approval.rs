//! The approval service's rules (spec §5.1) and what a person's answer to an
//! approval looks like.
//!
//! `approval.triggered` is always answered with `approval.started`. The
//! approval then decides itself when the strategy for the result of the
//! previous task is `automatic` (pass or warning → approve) or the previous
//! task failed (→ decline); otherwise it waits for a person, who answers with
//! an `approval.finished` (`keelson approve` / `keelson decline`, or
//! `POST /api/v1/event`).
//!
//! An unset strategy means **manual**. Keptn's shipyard documentation says
//! `automatic`, its approval-service treated an unset strategy as manual; an
//! approval step that silently lets everything through is the worse surprise,
//! so Keelson follows the service (docs/compatibility.md).

use crate::event::{task_type, KeptnEvent};
use crate::timestamp::Timestamp;
use serde_json::{json, Map, Value};

/// `source` of the events the approval function emits (Keptn's service name).
pub const SOURCE: &str = "approval-service";

/// Consumer name of the approval function, and the ledger under which each
/// approval's single answer is recorded (see [`answer_ledger_key`]).
pub const CONSUMER: &str = "approval";

/// The strategy value that lets the approval decide by itself.
pub const AUTOMATIC: &str = "automatic";
/// The strategy used when none is set for the result.
pub const MANUAL: &str = "manual";

/// The result an approval is about: `data.result` of the trigger (inherited
/// from the previous task), else `data.evaluation.result` (keptn#4391).
/// Empty when neither is there.
pub fn result_of(data: &Value) -> &str {
    match data.get("result").and_then(Value::as_str) {
        Some(r) if !r.is_empty() => r,
        _ => data
            .pointer("/evaluation/result")
            .and_then(Value::as_str)
            .unwrap_or(""),
    }
}

/// The strategy for `result` as the trigger's `data.approval` sets it (as
/// written, for the message): a failed previous task is declined
/// automatically; pass and warning use their strategy, manual when unset;
/// anything else is manual.
pub fn strategy_for<'a>(data: &'a Value, result: &str) -> &'a str {
    let set = |k: &str| {
        data.pointer(&format!("/approval/{k}"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(MANUAL)
    };
    match result {
        "pass" => set("pass"),
        "warning" => set("warning"),
        "fail" => AUTOMATIC,
        _ => MANUAL,
    }
}

/// What the approval decides by itself: `Some("pass")` (approve),
/// `Some("fail")` (decline) or `None` (a person decides).
pub fn automatic_answer(data: &Value) -> Option<&'static str> {
    let result = result_of(data);
    match result {
        "pass" | "warning" if strategy_for(data, result) == AUTOMATIC => Some("pass"),
        "fail" => Some("fail"),
        _ => None,
    }
}

/// `project`, `stage`, `service` and `labels` of the trigger.
fn common_data(trigger: &KeptnEvent) -> Map<String, Value> {
    crate::event::reply_data(&trigger.data)
}

fn reply(trigger: &KeptnEvent, kind: &str, data: Map<String, Value>, now: Timestamp) -> KeptnEvent {
    trigger.reply(
        SOURCE,
        task_type("approval", kind),
        &format!("approval.{kind}"),
        Value::Object(data),
        now,
    )
}

/// `approval.triggered` → `approval.started` (with Keptn's message naming the
/// strategy), plus the automatic `approval.finished` when there is one. The
/// ids derive from the trigger's, so a redelivered trigger yields the same
/// events.
pub fn on_triggered(trigger: &KeptnEvent, now: Timestamp) -> (KeptnEvent, Option<KeptnEvent>) {
    let result = result_of(&trigger.data);
    let mut d = common_data(trigger);
    d.insert("status".into(), json!("succeeded"));
    d.insert(
        "message".into(),
        json!(format!(
            "Approval strategy for result '{result}': {}",
            strategy_for(&trigger.data, result)
        )),
    );
    let started = reply(trigger, "started", d, now);
    let finished = automatic_answer(&trigger.data).map(|r| {
        let mut d = common_data(trigger);
        d.insert("status".into(), json!("succeeded"));
        d.insert("result".into(), json!(r));
        d.insert("message".into(), json!(""));
        reply(trigger, "finished", d, now)
    });
    (started, finished)
}

/// A person's answer to the open approval `trigger`: `approval.finished` with
/// result `pass` (approve) or `fail` (decline), status `succeeded`, as
/// `keptn send event approval.finished` sent it. The id is left to the API.
pub fn answer(trigger: &KeptnEvent, approve: bool, message: Option<&str>, source: &str) -> Value {
    let mut d = common_data(trigger);
    d.insert("status".into(), json!("succeeded"));
    d.insert(
        "result".into(),
        json!(if approve { "pass" } else { "fail" }),
    );
    if let Some(m) = message {
        d.insert("message".into(), json!(m));
    }
    let mut e = json!({
        "specversion": "1.0",
        "type": task_type("approval", "finished"),
        "source": source,
        "shkeptncontext": trigger.shkeptncontext,
        "triggeredid": trigger.id,
        "data": Value::Object(d),
    });
    if let Some(c) = &trigger.gitcommitid {
        e["gitcommitid"] = json!(c);
    }
    e
}

/// The key under which the one answer to the approval `triggered_id` is
/// recorded (in the store's applied-event ledger, consumer [`CONSUMER`]):
/// whoever records it first — a person through the API, or the automatic
/// strategy — answers; everyone after is told it was answered already.
pub fn answer_ledger_key(triggered_id: &str) -> String {
    format!("answer/{triggered_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(data: Value) -> KeptnEvent {
        let mut e = KeptnEvent::new(
            "t-1".into(),
            "shipyard-controller",
            task_type("approval", "triggered"),
            "ctx-1",
            data,
            Timestamp::from_millis(1_000),
        );
        e.gitcommitid = Some("c0ffee".into());
        e
    }

    fn base(extra: Value) -> Value {
        let mut d = json!({"project": "p", "stage": "production", "service": "carts", "labels": {"owner": "team"}});
        if let (Some(o), Some(x)) = (d.as_object_mut(), extra.as_object()) {
            for (k, v) in x {
                o.insert(k.clone(), v.clone());
            }
        }
        d
    }

    #[test]
    fn strategy_table() {
        // (data, started message, automatic answer)
        let cases = [
            (
                json!({"result": "pass", "approval": {"pass": "automatic", "warning": "manual"}}),
                "Approval strategy for result 'pass': automatic",
                Some("pass"),
            ),
            (
                json!({"result": "pass", "approval": {"pass": "manual", "warning": "automatic"}}),
                "Approval strategy for result 'pass': manual",
                None,
            ),
            (
                json!({"result": "warning", "approval": {"pass": "manual", "warning": "automatic"}}),
                "Approval strategy for result 'warning': automatic",
                Some("pass"),
            ),
            (
                json!({"result": "warning", "approval": {"pass": "automatic", "warning": "manual"}}),
                "Approval strategy for result 'warning': manual",
                None,
            ),
            // Unset strategy: manual (Keptn's approval-service, not its docs).
            (
                json!({"result": "pass"}),
                "Approval strategy for result 'pass': manual",
                None,
            ),
            (
                json!({"result": "warning", "approval": {}}),
                "Approval strategy for result 'warning': manual",
                None,
            ),
            (
                json!({"result": "pass", "approval": {"pass": ""}}),
                "Approval strategy for result 'pass': manual",
                None,
            ),
            // A failed previous task is declined whatever the strategy.
            (
                json!({"result": "fail", "approval": {"pass": "manual", "warning": "manual"}}),
                "Approval strategy for result 'fail': automatic",
                Some("fail"),
            ),
            // No result: the evaluation's (keptn#4391), else manual.
            (
                json!({"evaluation": {"result": "pass"}, "approval": {"pass": "automatic"}}),
                "Approval strategy for result 'pass': automatic",
                Some("pass"),
            ),
            (
                json!({"result": "", "evaluation": {"result": "fail"}}),
                "Approval strategy for result 'fail': automatic",
                Some("fail"),
            ),
            (
                json!({"approval": {"pass": "automatic"}}),
                "Approval strategy for result '': manual",
                None,
            ),
            // Values other than "automatic" are not automatic (compared as written).
            (
                json!({"result": "pass", "approval": {"pass": "Automatic"}}),
                "Approval strategy for result 'pass': Automatic",
                None,
            ),
        ];
        for (extra, message, auto) in cases {
            let t = trigger(base(extra.clone()));
            let (started, finished) = on_triggered(&t, Timestamp::from_millis(2_000));
            assert_eq!(started.ty, "sh.keptn.event.approval.started", "{extra}");
            assert_eq!(started.data["message"], json!(message), "{extra}");
            assert_eq!(started.data["status"], json!("succeeded"));
            assert_eq!(
                finished
                    .as_ref()
                    .map(|f| f.data["result"].as_str().unwrap_or("")),
                auto,
                "{extra}"
            );
        }
    }

    #[test]
    fn replies_belong_to_the_trigger_and_are_stable_under_redelivery() {
        let t = trigger(base(
            json!({"result": "pass", "approval": {"pass": "automatic"}}),
        ));
        let (s1, f1) = on_triggered(&t, Timestamp::from_millis(2_000));
        let (s2, f2) = on_triggered(&t, Timestamp::from_millis(9_000));
        let (f1, f2) = (f1.unwrap(), f2.unwrap());
        assert_eq!(
            (s1.id.as_str(), f1.id.as_str()),
            (s2.id.as_str(), f2.id.as_str())
        );
        assert_ne!(s1.id, f1.id);
        for e in [&s1, &f1] {
            assert_eq!(e.triggeredid.as_deref(), Some("t-1"));
            assert_eq!(e.shkeptncontext, "ctx-1");
            assert_eq!(e.gitcommitid.as_deref(), Some("c0ffee"));
            assert_eq!(e.source, SOURCE);
            assert_eq!(e.data["project"], "p");
            assert_eq!(e.data["stage"], "production");
            assert_eq!(e.data["service"], "carts");
            assert_eq!(e.data["labels"]["owner"], "team");
        }
        assert_eq!(f1.ty, "sh.keptn.event.approval.finished");
        assert_eq!(f1.data["status"], "succeeded");
        assert_eq!(f1.data["message"], "");
    }

    #[test]
    fn a_persons_answer_approves_or_declines_the_trigger() {
        let t = trigger(base(json!({"result": "pass"})));
        let yes = answer(&t, true, Some("looks good"), "keelson-cli");
        assert_eq!(yes["type"], "sh.keptn.event.approval.finished");
        assert_eq!(yes["triggeredid"], "t-1");
        assert_eq!(yes["shkeptncontext"], "ctx-1");
        assert_eq!(yes["gitcommitid"], "c0ffee");
        assert_eq!(yes["data"]["result"], "pass");
        assert_eq!(yes["data"]["status"], "succeeded");
        assert_eq!(yes["data"]["message"], "looks good");
        assert_eq!(yes["data"]["stage"], "production");
        let no = answer(&t, false, None, "keelson-cli");
        assert_eq!(no["data"]["result"], "fail");
        assert!(no["data"].get("message").is_none());
        assert!(no.get("id").is_none(), "the API assigns the id");
    }
}
