//! Built-in echo executors for the demo: they answer a task's `.triggered`
//! with `.started` and a passing `.finished`, like a minimal integration.

use keelson_core::event::{task_type, EventType, KeptnEvent};
use keelson_core::ids;
use keelson_core::ports::Subscription;
use keelson_core::Timestamp;
use serde_json::json;

/// Source of the echo executors' events.
pub const SOURCE: &str = "keelson-echo-executor";

/// Consumer name of the echo executor for `task`.
pub fn consumer(task: &str) -> String {
    format!("echo-{task}")
}

/// Its subscription.
pub fn subscription(task: &str) -> Subscription {
    Subscription::new(&consumer(task), &[&task_type(task, "triggered")])
}

/// The `.started` and `.finished` answering a task trigger (ids derived from it).
pub fn echo(trigger: &KeptnEvent, now: Timestamp) -> Vec<KeptnEvent> {
    let EventType::Task { task, .. } = trigger.event_type() else {
        return vec![];
    };
    let scope = json!({
        "project": trigger.project(),
        "stage": trigger.stage(),
        "service": trigger.service(),
    });
    let mut started = KeptnEvent::new(
        ids::derive(&trigger.id, "echo/started"),
        SOURCE,
        task_type(&task, "started"),
        &trigger.shkeptncontext,
        scope.clone(),
        now,
    );
    started.triggeredid = Some(trigger.id.clone());
    started.gitcommitid = trigger.gitcommitid.clone();
    let mut data = scope;
    data["result"] = json!("pass");
    data["status"] = json!("succeeded");
    data["message"] = json!(format!("{task} done by the echo executor"));
    if task == "deployment" {
        data["deployment"] = json!({"deploymentstrategy": "direct", "deploymentNames": ["direct"], "deploymentURIsLocal": [], "deploymentURIsPublic": []});
    }
    let mut finished = KeptnEvent::new(
        ids::derive(&trigger.id, "echo/finished"),
        SOURCE,
        task_type(&task, "finished"),
        &trigger.shkeptncontext,
        data,
        now,
    );
    finished.triggeredid = Some(trigger.id.clone());
    finished.gitcommitid = trigger.gitcommitid.clone();
    vec![started, finished]
}
