//! Test data built with the core's constructors.

use keelson_core::event::{sequence_type, task_type, KeptnEvent};
use keelson_core::ports::{EventStore, LaneCommit, SequenceStore, StoreError};
use keelson_core::project::Project;
use keelson_core::query::EventQuery;
use keelson_core::sequence::{self, Config, Decision, Input, LaneKey, LaneState, TriggerSpec};
use keelson_core::shipyard::Task;
use keelson_core::timestamp::Timestamp;
use serde_json::{json, Value};

pub(crate) const DEPLOYMENT_TRIGGERED: &str = "sh.keptn.event.deployment.triggered";
pub(crate) const DEPLOYMENT_FINISHED: &str = "sh.keptn.event.deployment.finished";
pub(crate) const TEST_TRIGGERED: &str = "sh.keptn.event.test.triggered";
pub(crate) const EVALUATION_FINISHED: &str = "sh.keptn.event.evaluation.finished";
pub(crate) const EVALUATION_INVALIDATED: &str = "sh.keptn.event.evaluation.invalidated";

pub(crate) const SHIPYARD: &str = "apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\nmetadata:\n  name: shipyard\nspec:\n  stages:\n    - name: dev\n    - name: prod\n";

/// A time: `ms` after 2023-11-14.
pub(crate) fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + ms)
}

/// An event of `project` / `stage` / `service` (each left out of `data` when empty).
pub(crate) fn ev(
    id: &str,
    ty: &str,
    ctx: &str,
    (project, stage, service): (&str, &str, &str),
    time_ms: i64,
) -> KeptnEvent {
    let mut data = serde_json::Map::new();
    for (k, v) in [("project", project), ("stage", stage), ("service", service)] {
        if !v.is_empty() {
            data.insert(k.into(), json!(v));
        }
    }
    KeptnEvent::new(
        id.into(),
        "test-source",
        ty.into(),
        ctx,
        Value::Object(data),
        t(time_ms),
    )
}

/// The ids of events, in order.
pub(crate) fn ids(events: &[KeptnEvent]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

/// A query for everything, on one large page.
pub(crate) fn all() -> EventQuery {
    EventQuery {
        page_size: 100,
        ..EventQuery::default()
    }
}

/// The ids of the events `q` finds (one page), newest first.
pub(crate) async fn query_ids<S: EventStore>(s: &S, q: EventQuery) -> Vec<String> {
    let page = s.query_events(&q).await.expect("query_events");
    page.events.into_iter().map(|e| e.id).collect()
}

/// Inserts and checks they were all new.
pub(crate) async fn insert<S: EventStore>(s: &S, events: &[KeptnEvent]) {
    let n = s.insert_events(events).await.expect("insert_events");
    assert_eq!(n, events.len(), "all inserted events are new");
}

pub(crate) fn project(name: &str) -> Project {
    Project {
        name: name.into(),
        creation_date: t(0),
        shipyard: SHIPYARD.into(),
        shipyard_version: "spec.keptn.sh/0.2.4".into(),
        stages: vec!["dev".into(), "prod".into()],
        services: vec![],
        git_remote_url: None,
        git_user: None,
    }
}

pub(crate) fn is_commit_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(crate) fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

pub(crate) fn cfg() -> Config {
    Config::default()
}

/// `<stage>.delivery.triggered` of `key`'s project, stage and service.
pub(crate) fn sequence_trigger(id: &str, ctx: &str, key: &LaneKey, time_ms: i64) -> KeptnEvent {
    let mut e = ev(
        id,
        &sequence_type(&key.stage, "delivery", "triggered"),
        ctx,
        (&key.project, &key.stage, &key.service),
        time_ms,
    );
    e.source = "cli".into();
    e
}

/// Deployment then test.
pub(crate) fn spec() -> TriggerSpec {
    let task = |name: &str| Task {
        name: name.into(),
        triggered_after: None,
        properties: None,
    };
    TriggerSpec {
        tasks: vec![task("deployment"), task("test")],
        follow_ups: vec![],
        gitcommitid: Some("0123456789abcdef0123456789abcdef".into()),
    }
}

/// A lane with its version, driven through the core's state machine.
pub(crate) struct Lane {
    pub key: LaneKey,
    pub version: u64,
    pub state: LaneState,
}

impl Lane {
    pub fn new(project: &str, stage: &str, service: &str) -> Lane {
        Lane {
            key: LaneKey::new(project, stage, service),
            version: 0,
            state: LaneState::default(),
        }
    }

    /// Applies `input` at `now_ms` and commits it as `consumer` applying `cause`.
    pub async fn apply<S: SequenceStore>(
        &mut self,
        s: &S,
        input: Input<'_>,
        now_ms: i64,
        cause: &str,
    ) -> Decision {
        let d = sequence::handle(&self.state, input, t(now_ms), &cfg());
        s.commit_lane(LaneCommit {
            key: &self.key,
            expected_version: self.version,
            state: &d.lane,
            ended: &d.ended,
            next_wakeup: sequence::next_wakeup(&d.lane, &cfg()),
            consumer: "shipyard",
            cause_id: cause,
            effects: &d.emit,
            now: Timestamp::from_millis(1_000),
        })
        .await
        .expect("commit_lane");
        self.version += 1;
        self.state = d.lane.clone();
        d
    }

    /// Triggers `<stage>.delivery` with id `id` in context `ctx`.
    pub async fn trigger<S: SequenceStore>(
        &mut self,
        s: &S,
        id: &str,
        ctx: &str,
        now_ms: i64,
    ) -> Decision {
        let ev = sequence_trigger(id, ctx, &self.key, now_ms);
        let input = Input::Trigger {
            event: &ev,
            spec: Ok(spec()),
            paused: false,
        };
        self.apply(s, input, now_ms, id).await
    }

    /// Answers the open task trigger of context `ctx` with `.started` and `.finished` (pass).
    pub async fn finish_task<S: SequenceStore>(
        &mut self,
        s: &S,
        ctx: &str,
        now_ms: i64,
    ) -> Decision {
        let open = sequence::open_triggers(&self.state)
            .into_iter()
            .find(|e| e.shkeptncontext == ctx)
            .cloned()
            .expect("an open task trigger of the context");
        let task = open
            .ty
            .strip_prefix("sh.keptn.event.")
            .and_then(|r| r.strip_suffix(".triggered"))
            .expect("a task trigger")
            .to_string();
        let scope = (
            self.key.project.as_str(),
            self.key.stage.as_str(),
            self.key.service.as_str(),
        );
        let mut started = ev(
            &format!("{}-started", open.id),
            &task_type(&task, "started"),
            ctx,
            scope,
            now_ms,
        );
        started.triggeredid = Some(open.id.clone());
        let mut finished = ev(
            &format!("{}-finished", open.id),
            &task_type(&task, "finished"),
            ctx,
            scope,
            now_ms,
        );
        finished.triggeredid = Some(open.id.clone());
        finished.data["result"] = json!("pass");
        finished.data["status"] = json!("succeeded");
        self.apply(s, Input::TaskEvent(&started), now_ms, &started.id)
            .await;
        self.apply(s, Input::TaskEvent(&finished), now_ms, &finished.id)
            .await
    }
}
