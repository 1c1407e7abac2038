//! At-least-once delivery: every event of a sequence delivered twice and out of
//! order gives the same final state and no duplicate emitted event; a crash
//! between the state write and the publish re-publishes the same effects.

use keelson_core::event::{EventType, KeptnEvent, Kind};
use keelson_core::ports::{
    Clock, EventBus, ExecutionFilter, ManualClock, ProjectStore, SequenceStore, StoreError,
    StoreResult,
};
use keelson_core::project::{Project, Service};
use keelson_core::sequence::Config;
use keelson_core::Timestamp;
use keelson_memory::MemoryStore;
use keelson_shipyard::{Orchestrator, Outcome};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct CaptureBus {
    out: Arc<Mutex<Vec<KeptnEvent>>>,
    fail_next: Arc<AtomicUsize>,
}

impl EventBus for CaptureBus {
    async fn publish(&self, events: &[KeptnEvent]) -> StoreResult<()> {
        if self.fail_next.load(Ordering::SeqCst) > 0 {
            self.fail_next.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::backend(std::io::Error::other("bus down"), true));
        }
        self.out.lock().unwrap().extend_from_slice(events);
        Ok(())
    }
}

impl CaptureBus {
    fn drain(&self) -> Vec<KeptnEvent> {
        std::mem::take(&mut *self.out.lock().unwrap())
    }
}

type Orch = Orchestrator<MemoryStore, CaptureBus, Arc<ManualClock>>;

async fn setup() -> (Orch, CaptureBus, MemoryStore) {
    let store = MemoryStore::new();
    let now = Timestamp::from_millis(1_800_000_000_000);
    let sy = keelson_core::shipyard::Shipyard::parse(keelson_tests::SHIPYARD).unwrap();
    let p = Project {
        name: "p".into(),
        creation_date: now,
        shipyard: keelson_tests::SHIPYARD.into(),
        shipyard_version: sy.api_version.clone(),
        stages: sy.stage_names(),
        services: vec![Service {
            name: "svc".into(),
            creation_date: now,
        }],
        git_remote_url: None,
        git_user: None,
    };
    store.create_project(&p, now).await.unwrap();
    let bus = CaptureBus::default();
    let orch = Orchestrator::new(
        store.clone(),
        bus.clone(),
        Arc::new(ManualClock::at(now)),
        Config::default(),
    );
    (orch, bus, store)
}

fn trigger() -> KeptnEvent {
    KeptnEvent::new(
        "trigger-1".into(),
        "test",
        "sh.keptn.event.dev.delivery.triggered".into(),
        "ctx-1",
        serde_json::json!({"project":"p","stage":"dev","service":"svc","configurationChange":{"values":{"image":"i:1"}}}),
        Timestamp::from_millis(1_800_000_000_000),
    )
}

/// The executors' answers to a task trigger: one executor, `.started` and `.finished`.
fn answers(t: &KeptnEvent) -> Vec<KeptnEvent> {
    let EventType::Task {
        task,
        kind: Kind::Triggered,
    } = t.event_type()
    else {
        return vec![];
    };
    keelson::executors::echo(t, t.time)
        .into_iter()
        .inspect(|e| assert!(e.ty.contains(&task)))
        .collect()
}

/// A small deterministic generator (no dependency needed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

struct RunResult {
    published: BTreeMap<String, KeptnEvent>,
    publications: usize,
    final_states: Vec<(String, String, Option<String>)>,
}

/// Runs the scenario; `dup` delivers every event twice, `seed` picks the delivery order.
async fn run(dup: bool, seed: Option<u64>) -> RunResult {
    let (orch, bus, store) = setup().await;
    let mut rng = Lcg(seed.unwrap_or(0));
    let mut pending = vec![trigger()];
    if dup {
        pending.push(trigger());
    }
    let mut published: BTreeMap<String, KeptnEvent> = BTreeMap::new();
    let mut publications = 0;
    while !pending.is_empty() {
        let i = if seed.is_some() {
            rng.next(pending.len())
        } else {
            0
        };
        let ev = pending.remove(i);
        orch.process(&ev).await.unwrap();
        for out in bus.drain() {
            publications += 1;
            if let Some(prev) = published.get(&out.id) {
                assert_eq!(prev.ty, out.ty, "a re-published id must be the same event");
                assert_eq!(
                    prev.data, out.data,
                    "a re-published id must be the same event"
                );
                continue;
            }
            published.insert(out.id.clone(), out.clone());
            let mut next = vec![];
            match out.event_type() {
                EventType::Task {
                    kind: Kind::Triggered,
                    ..
                } => next.extend(answers(&out)),
                EventType::Sequence {
                    kind: Kind::Triggered,
                    ..
                } => next.push(out.clone()),
                _ => {}
            }
            for n in next {
                if dup {
                    pending.push(n.clone());
                }
                pending.push(n);
            }
        }
    }
    let mut final_states: Vec<(String, String, Option<String>)> = store
        .list_executions(&ExecutionFilter {
            project: "p".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                format!("{}.{}", e.stage, e.sequence),
                format!("{:?}", e.state),
                e.result,
            )
        })
        .collect();
    final_states.sort();
    RunResult {
        published,
        publications,
        final_states,
    }
}

#[tokio::test]
async fn every_event_delivered_twice_and_out_of_order_gives_the_same_result_without_duplicates() {
    let clean = run(false, None).await;
    assert_eq!(
        clean.publications,
        clean.published.len(),
        "the clean run publishes each event once"
    );
    let prod = clean
        .final_states
        .iter()
        .find(|s| s.0 == "production.delivery")
        .expect("the delivery reached production");
    assert_eq!(prod.1, "Finished");
    let clean_ids: Vec<(&String, &String)> =
        clean.published.values().map(|e| (&e.id, &e.ty)).collect();
    for seed in 1..=25u64 {
        let adverse = run(true, Some(seed)).await;
        assert_eq!(adverse.final_states, clean.final_states, "seed {seed}");
        let ids: Vec<(&String, &String)> =
            adverse.published.values().map(|e| (&e.id, &e.ty)).collect();
        assert_eq!(
            ids, clean_ids,
            "seed {seed}: the same events, with the same ids, and no others"
        );
    }
}

#[tokio::test]
async fn a_redelivered_event_whose_write_landed_republishes_the_same_effects() {
    let (orch, bus, _store) = setup().await;
    bus.fail_next.store(1, Ordering::SeqCst);
    // The state write lands, then publishing fails: the consumer reports an error and the event is redelivered.
    assert!(orch.process(&trigger()).await.is_err());
    assert!(bus.drain().is_empty());
    let out = orch.process(&trigger()).await.unwrap();
    assert_eq!(out, Outcome::AlreadyApplied { republished: 1 });
    let first = bus.drain();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].ty, "sh.keptn.event.deployment.triggered");
    // A third delivery re-publishes the very same event (same id), nothing new.
    orch.process(&trigger()).await.unwrap();
    let again = bus.drain();
    assert_eq!(again, first);
}

/// Events that cannot change a lane are ignored by their type alone: the
/// sequence's own `.started`/`.finished` and a task event answering no trigger.
#[tokio::test]
async fn events_that_cannot_change_a_lane_are_ignored_and_leave_it_as_it_was() {
    let (orch, bus, store) = setup().await;
    orch.process(&trigger()).await.unwrap();
    let task = bus.drain().pop().unwrap();
    let key = keelson_core::sequence::LaneKey::new("p", "dev", "svc");
    let before = store.load_lane(&key).await.unwrap().unwrap();
    let like = |id: &str, ty: &str, triggeredid: Option<&str>| {
        let mut e = KeptnEvent::new(
            id.into(),
            "test",
            ty.into(),
            "ctx-1",
            serde_json::json!({"project":"p","stage":"dev","service":"svc","status":"succeeded","result":"pass"}),
            Timestamp::from_millis(1_800_000_000_000),
        );
        e.triggeredid = triggeredid.map(str::to_string);
        e
    };
    for ev in [
        like(
            "s",
            "sh.keptn.event.dev.delivery.started",
            Some("trigger-1"),
        ),
        like(
            "f",
            "sh.keptn.event.dev.delivery.finished",
            Some("trigger-1"),
        ),
        like("n", "sh.keptn.event.deployment.finished", None),
        like(
            "t",
            "sh.keptn.event.deployment.triggered",
            Some("trigger-1"),
        ),
    ] {
        assert_eq!(
            orch.process(&ev).await.unwrap(),
            Outcome::Ignored,
            "{}",
            ev.ty
        );
    }
    assert!(bus.drain().is_empty());
    assert_eq!(store.load_lane(&key).await.unwrap().unwrap(), before);
    // The task's own answer still moves the lane on.
    let finished = like("ok", "sh.keptn.event.deployment.finished", Some(&task.id));
    assert!(matches!(
        orch.process(&finished).await.unwrap(),
        Outcome::Applied { .. }
    ));
}

#[tokio::test]
async fn a_redelivered_trigger_applies_a_pause_that_raced_its_first_delivery() {
    let (orch, bus, store) = setup().await;
    let t = trigger();
    // The first delivery commits and publishes, then fails before it reconciles
    // a pause that landed meanwhile (here: set behind its back); the broker redelivers.
    orch.process(&t).await.unwrap();
    bus.drain();
    store
        .set_paused("p", &t.shkeptncontext, None, true)
        .await
        .unwrap();
    let paused = || async {
        let f = ExecutionFilter {
            project: "p".into(),
            keptn_context: Some(t.shkeptncontext.clone()),
            ..ExecutionFilter::default()
        };
        store.list_executions(&f).await.unwrap()[0].paused
    };
    assert!(!paused().await);
    let out = orch.process(&t).await.unwrap();
    assert_eq!(out, Outcome::AlreadyApplied { republished: 1 });
    assert!(paused().await, "the redelivery paused the execution");
}

/// An abort commits, then every publish attempt fails and its process "dies".
/// Returns the store and another process's orchestrator on it, with its bus.
async fn abort_then_die() -> (MemoryStore, Orch, CaptureBus) {
    let (orch, bus, store) = setup().await;
    orch.process(&trigger()).await.unwrap();
    bus.drain();
    bus.fail_next.store(100, Ordering::SeqCst);
    assert!(orch
        .control(
            "p",
            "ctx-1",
            keelson_core::sequence::ControlAction::Abort,
            None
        )
        .await
        .is_err());
    assert!(bus.drain().is_empty());
    let bus2 = CaptureBus::default();
    let orch2 = Orchestrator::new(
        store.clone(),
        bus2.clone(),
        Arc::new(ManualClock::at(Timestamp::from_millis(1_800_000_000_000))),
        Config::default(),
    );
    (store, orch2, bus2)
}

#[tokio::test]
async fn effects_of_a_control_request_lost_in_a_crash_are_republished_at_start() {
    let (_store, orch2, bus2) = abort_then_die().await;
    // A new process on the same store re-publishes the last effects it finds.
    assert!(orch2.republish_recent(60_000).await.unwrap() >= 1);
    let out = bus2.drain();
    let fin = out
        .iter()
        .find(|e| e.ty == "sh.keptn.event.dev.delivery.finished")
        .expect("the abort's .finished");
    assert_eq!(fin.data["status"], serde_json::json!("aborted"));
}

#[tokio::test]
async fn effects_of_a_control_request_lost_in_a_crash_are_published_by_the_next_sweep_once() {
    let (store, orch2, bus2) = abort_then_die().await;
    let key = keelson_core::sequence::LaneKey::new("p", "dev", "svc");
    let lane = store.load_lane(&key).await.unwrap().unwrap();
    assert_eq!(lane.value.unpublished.len(), 1, "committed as unpublished");
    // Another process's sweep (the Lambda schedule) finds the lane due and publishes.
    orch2.tick().await.unwrap();
    let out = bus2.drain();
    let fin: Vec<&KeptnEvent> = out
        .iter()
        .filter(|e| e.ty == "sh.keptn.event.dev.delivery.finished")
        .collect();
    assert_eq!(fin.len(), 1, "{out:?}");
    assert_eq!(fin[0].data["status"], serde_json::json!("aborted"));
    let lane = store.load_lane(&key).await.unwrap().unwrap();
    assert!(lane.value.unpublished.is_empty());
    orch2.tick().await.unwrap();
    assert!(bus2.drain().is_empty(), "published once");
}

#[tokio::test]
async fn a_control_request_whose_publish_succeeds_leaves_nothing_unpublished() {
    let (orch, bus, store) = setup().await;
    orch.process(&trigger()).await.unwrap();
    orch.control(
        "p",
        "ctx-1",
        keelson_core::sequence::ControlAction::Abort,
        None,
    )
    .await
    .unwrap();
    assert!(bus
        .drain()
        .iter()
        .any(|e| e.ty == "sh.keptn.event.dev.delivery.finished"));
    let key = keelson_core::sequence::LaneKey::new("p", "dev", "svc");
    let lane = store.load_lane(&key).await.unwrap().unwrap();
    assert!(lane.value.unpublished.is_empty());
    assert!(store
        .due_lanes(Timestamp::from_millis(1_800_000_000_000))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_project_created_again_under_its_old_name_still_times_out() {
    let (orch, bus, store) = setup().await;
    let project = store.get_project("p").await.unwrap().unwrap().value;
    let timed_out = |bus: &CaptureBus| {
        bus.drain()
            .iter()
            .filter(|e| {
                e.ty == "sh.keptn.event.dev.delivery.finished"
                    && e.data["status"] == serde_json::json!("errored")
            })
            .count()
    };
    for round in 0..2 {
        let mut t = trigger();
        t.id = format!("trigger-{round}");
        t.shkeptncontext = format!("ctx-{round}");
        orch.process(&t).await.unwrap();
        // Ten minutes without a .started: the tick times the sequence out.
        orch.clock().advance_ms(11 * 60 * 1000);
        orch.tick().await.unwrap();
        assert_eq!(timed_out(&bus), 1, "round {round}");
        // The lane's versions start again from 1 in the new project; the
        // tick of the old lane at the same version must not shadow this one.
        store.delete_project("p").await.unwrap();
        store
            .create_project(&project, orch.clock().now())
            .await
            .unwrap();
    }
}
