//! The remediation function against the memory adapters: the action it
//! answers for a problem, at the trigger's commit, and when there is none.

use keelson_core::event::{task_type, KeptnEvent};
use keelson_core::ports::{ManualClock, ProjectStore, Queue, ResourceStore, Subscription};
use keelson_core::project::{Project, Service};
use keelson_core::resource::{Change, Scope};
use keelson_core::Timestamp;
use keelson_memory::{MemoryBus, MemoryStore};
use keelson_remediation::{Outcome, Remediation};
use serde_json::{json, Value};
use std::sync::Arc;

const PROBE: &str = "probe";
const FILE: &str = "apiVersion: spec.keptn.sh/0.1.4\nkind: Remediation\nmetadata: {name: carts}\nspec:\n  remediations:\n    - problemType: Response time degradation\n      actionsOnOpen:\n        - {name: Scale up, action: scaling, value: 2}\n        - {name: Toggle, action: featuretoggle}\n";

fn t0() -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000)
}

struct World {
    store: MemoryStore,
    bus: MemoryBus,
    f: Remediation<MemoryStore, MemoryBus, Arc<ManualClock>>,
}

impl World {
    async fn new() -> World {
        let store = MemoryStore::new();
        let bus = MemoryBus::new(vec![Subscription::new(PROBE, &["sh.keptn.event.>"])]);
        store
            .create_project(
                &Project {
                    name: "p".into(),
                    creation_date: t0(),
                    shipyard: String::new(),
                    shipyard_version: "spec.keptn.sh/0.2.4".into(),
                    stages: vec!["production".into()],
                    services: vec![Service {
                        name: "carts".into(),
                        creation_date: t0(),
                    }],
                    git_remote_url: None,
                    git_user: None,
                },
                t0(),
            )
            .await
            .unwrap();
        let f = Remediation::new(store.clone(), bus.clone(), Arc::new(ManualClock::at(t0())));
        World { store, bus, f }
    }

    async fn write(&self, content: &str) -> String {
        self.store
            .write_resources(
                "p",
                &Scope {
                    stage: Some("production".into()),
                    service: Some("carts".into()),
                },
                &[Change {
                    uri: "remediation.yaml".into(),
                    content: Some(content.as_bytes().to_vec()),
                }],
                t0(),
            )
            .await
            .unwrap()
    }

    async fn published(&self) -> Vec<KeptnEvent> {
        let d = self.bus.receive(PROBE, 100).await.unwrap();
        let r: Vec<u64> = d.iter().map(|d| d.receipt).collect();
        self.bus.ack(PROBE, &r).await.unwrap();
        d.into_iter().map(|d| d.event).collect()
    }
}

fn trigger(index: Option<i64>, commit: Option<&str>) -> KeptnEvent {
    let mut data = json!({"project": "p", "stage": "production", "service": "carts",
        "problem": {"problemTitle": "slow", "rootCause": "Response time degradation"}});
    if let Some(i) = index {
        data["get-action"] = json!({"actionIndex": i});
    }
    let mut e = KeptnEvent::new(
        "ga".into(),
        "shipyard-controller",
        task_type("get-action", "triggered"),
        "ctx",
        data,
        t0(),
    );
    e.gitcommitid = commit.map(str::to_string);
    e
}

fn finished(evs: &[KeptnEvent]) -> Value {
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert_eq!(evs[0].ty, "sh.keptn.event.get-action.started");
    assert_eq!(evs[1].ty, "sh.keptn.event.get-action.finished");
    evs[1].data.clone()
}

#[tokio::test]
async fn each_loop_gets_the_next_action_and_then_none() {
    let w = World::new().await;
    w.write(FILE).await;
    for (index, name) in [(None, "Scale up"), (Some(1), "Toggle")] {
        assert_eq!(
            w.f.process(&trigger(index, None)).await.unwrap(),
            Outcome::Answered("pass".into())
        );
        let d = finished(&w.published().await);
        assert_eq!(d["action"]["name"], name);
        assert_eq!(d["get-action"]["actionIndex"], index.unwrap_or(0) + 1);
    }
    assert_eq!(
        w.f.process(&trigger(Some(2), None)).await.unwrap(),
        Outcome::Answered("fail".into())
    );
    let d = finished(&w.published().await);
    assert_eq!(d["status"], "succeeded");
    assert_eq!(
        d["message"],
        "there is no action with index 2 for root cause Response time degradation"
    );
}

#[tokio::test]
async fn the_file_is_read_at_the_triggers_commit_and_its_absence_is_an_error() {
    let w = World::new().await;
    w.f.process(&trigger(None, None)).await.unwrap();
    let d = finished(&w.published().await);
    assert_eq!(d["status"], "errored");
    assert_eq!(
        d["message"],
        "Could not get remediation.yaml file for services carts in stage production."
    );

    let first = w.write(FILE).await;
    w.write(&FILE.replace("Scale up", "Scale out")).await;
    w.f.process(&trigger(None, Some(&first))).await.unwrap();
    assert_eq!(finished(&w.published().await)["action"]["name"], "Scale up");
    w.f.process(&trigger(None, None)).await.unwrap();
    assert_eq!(
        finished(&w.published().await)["action"]["name"],
        "Scale out"
    );
}

#[tokio::test]
async fn other_events_are_ignored_and_a_trigger_without_a_stage_is_invalid() {
    let w = World::new().await;
    let mut e = trigger(None, None);
    e.ty = task_type("action", "triggered");
    assert_eq!(w.f.process(&e).await.unwrap(), Outcome::Ignored);
    let mut e = trigger(None, None);
    e.data = json!({"project": "p"});
    let err = w.f.process(&e).await.unwrap_err();
    assert_eq!(err.kind(), keelson_core::ErrorKind::Invalid);
    assert!(w.published().await.is_empty());
}
