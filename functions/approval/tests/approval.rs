//! The approval function against the memory adapters.

use keelson_approval::{Approval, Outcome};
use keelson_core::approval::{answer_ledger_key, CONSUMER};
use keelson_core::event::{task_type, KeptnEvent};
use keelson_core::ports::{ManualClock, Queue, SequenceStore, Subscription};
use keelson_core::Timestamp;
use keelson_memory::{MemoryBus, MemoryStore};
use serde_json::{json, Value};
use std::sync::Arc;

const PROBE: &str = "probe";

struct World {
    store: MemoryStore,
    bus: MemoryBus,
    approval: Approval<MemoryStore, MemoryBus, Arc<ManualClock>>,
}

impl World {
    fn new() -> World {
        let store = MemoryStore::new();
        let bus = MemoryBus::new(vec![Subscription::new(PROBE, &["sh.keptn.event.>"])]);
        let clock = Arc::new(ManualClock::at(Timestamp::from_millis(1_700_000_000_000)));
        let approval = Approval::new(store.clone(), bus.clone(), clock);
        World {
            store,
            bus,
            approval,
        }
    }

    async fn published(&self) -> Vec<KeptnEvent> {
        let deliveries = self.bus.receive(PROBE, 100).await.unwrap();
        let receipts: Vec<u64> = deliveries.iter().map(|d| d.receipt).collect();
        self.bus.ack(PROBE, &receipts).await.unwrap();
        deliveries.into_iter().map(|d| d.event).collect()
    }
}

fn trigger(id: &str, result: &str, approval: Value) -> KeptnEvent {
    let mut e = KeptnEvent::new(
        id.into(),
        "shipyard-controller",
        task_type("approval", "triggered"),
        "ctx",
        json!({"project": "p", "stage": "production", "service": "carts",
               "result": result, "approval": approval}),
        Timestamp::from_millis(1_700_000_000_000),
    );
    e.triggeredid = None;
    e
}

fn types(evs: &[KeptnEvent]) -> Vec<(&str, Option<&str>)> {
    evs.iter()
        .map(|e| (e.ty.as_str(), e.data_str("result")))
        .collect()
}

#[tokio::test]
async fn automatic_pass_is_approved_and_a_failed_result_declined() {
    let w = World::new();
    let out = w
        .approval
        .process(&trigger(
            "t1",
            "pass",
            json!({"pass": "automatic", "warning": "manual"}),
        ))
        .await
        .unwrap();
    assert_eq!(out, Outcome::Decided("pass".into()));
    assert_eq!(
        types(&w.published().await),
        vec![
            ("sh.keptn.event.approval.started", None),
            ("sh.keptn.event.approval.finished", Some("pass"))
        ]
    );
    let out = w
        .approval
        .process(&trigger("t2", "fail", json!({"pass": "automatic"})))
        .await
        .unwrap();
    assert_eq!(out, Outcome::Decided("fail".into()));
    let evs = w.published().await;
    assert_eq!(evs[1].data["result"], "fail");
    assert_eq!(evs[1].data["status"], "succeeded");
    assert_eq!(evs[1].triggeredid.as_deref(), Some("t2"));
}

#[tokio::test]
async fn manual_and_unset_strategies_wait_for_a_person() {
    let w = World::new();
    for (id, result, strategy) in [
        ("t1", "pass", json!({"pass": "manual"})),
        ("t2", "warning", json!({"pass": "automatic"})),
        ("t3", "pass", json!(null)),
    ] {
        let out = w
            .approval
            .process(&trigger(id, result, strategy))
            .await
            .unwrap();
        assert_eq!(out, Outcome::Waiting, "{id}");
        let evs = w.published().await;
        assert_eq!(
            types(&evs),
            vec![("sh.keptn.event.approval.started", None)],
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_redelivered_trigger_sends_the_same_answer_again() {
    let w = World::new();
    let t = trigger("t1", "warning", json!({"warning": "automatic"}));
    w.approval.process(&t).await.unwrap();
    let first = w.published().await;
    assert_eq!(
        w.approval.process(&t).await.unwrap(),
        Outcome::Decided("pass".into())
    );
    let again = w.published().await;
    let ids = |v: &[KeptnEvent]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&again), "same ids: consumers dedupe them");
}

#[tokio::test]
async fn an_approval_answered_by_a_person_first_gets_no_automatic_answer() {
    let w = World::new();
    let t = trigger("t1", "pass", json!({"pass": "automatic"}));
    // What the API records when a person declines first.
    let mut person = KeptnEvent::new(
        "answer-1".into(),
        "keelson-cli",
        task_type("approval", "finished"),
        "ctx",
        json!({"result": "fail", "status": "succeeded"}),
        Timestamp::from_millis(1_700_000_000_000),
    );
    person.triggeredid = Some("t1".into());
    assert!(w
        .store
        .record_applied(
            CONSUMER,
            &answer_ledger_key("t1"),
            &[person],
            Timestamp::from_millis(1)
        )
        .await
        .unwrap());
    assert_eq!(
        w.approval.process(&t).await.unwrap(),
        Outcome::AnsweredBefore
    );
    assert_eq!(
        types(&w.published().await),
        vec![("sh.keptn.event.approval.started", None)]
    );
}

#[tokio::test]
async fn other_events_are_ignored() {
    let w = World::new();
    let mut e = trigger("t1", "pass", json!({"pass": "automatic"}));
    e.ty = task_type("deployment", "triggered");
    assert_eq!(w.approval.process(&e).await.unwrap(), Outcome::Ignored);
    assert!(w.published().await.is_empty());
}
