//! Sequence orchestration state: [`SequenceStore`].

use crate::fixtures::*;
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{
    AppliedOrLane, ExecutionFilter, LaneCommit, OpenTriggerFilter, SequenceStore, StoreError,
    StoreResult, Versioned,
};
use keelson_core::sequence::{self, ControlAction, Execution, Input, LaneKey, LaneState};
use keelson_core::timestamp::Timestamp;
use serde_json::json;

/// A commit by consumer `shipyard` unless said otherwise.
#[derive(Clone, Copy)]
struct Commit<'a> {
    key: &'a LaneKey,
    expected_version: u64,
    state: &'a LaneState,
    next_wakeup: Option<Timestamp>,
    consumer: &'a str,
    cause_id: &'a str,
    effects: &'a [KeptnEvent],
}

impl<'a> Commit<'a> {
    fn new(
        key: &'a LaneKey,
        expected_version: u64,
        state: &'a LaneState,
        cause_id: &'a str,
    ) -> Self {
        Commit {
            key,
            expected_version,
            state,
            next_wakeup: None,
            consumer: "shipyard",
            cause_id,
            effects: &[],
        }
    }

    async fn run<S: SequenceStore>(&self, s: &S) -> StoreResult<()> {
        s.commit_lane(LaneCommit {
            key: self.key,
            expected_version: self.expected_version,
            state: self.state,
            ended: &[],
            next_wakeup: self.next_wakeup,
            consumer: self.consumer,
            cause_id: self.cause_id,
            effects: self.effects,
            now: Timestamp::from_millis(1_000),
        })
        .await
    }
}

fn open_of(ty: &str) -> OpenTriggerFilter {
    OpenTriggerFilter {
        ty: ty.into(),
        ..OpenTriggerFilter::default()
    }
}

fn executions_of(project: &str) -> ExecutionFilter {
    ExecutionFilter {
        project: project.into(),
        ..ExecutionFilter::default()
    }
}

fn expect_err<T: std::fmt::Debug>(r: StoreResult<T>, want: &str) {
    let ok = matches!(
        (&r, want),
        (Err(StoreError::Conflict), "Conflict")
            | (Err(StoreError::AlreadyApplied), "AlreadyApplied")
    );
    assert!(ok, "expected {want}, got {r:?}");
}

/// Everything a lane commit may change, for before/after comparisons.
#[derive(Debug, PartialEq)]
struct Snapshot {
    lane: Option<Versioned<LaneState>>,
    effects: Option<Vec<KeptnEvent>>,
    open: Vec<KeptnEvent>,
    executions: Vec<Execution>,
    due: Vec<LaneKey>,
}

async fn snapshot<S: SequenceStore>(s: &S, key: &LaneKey, cause: &str) -> Snapshot {
    Snapshot {
        lane: s.load_lane(key).await.unwrap(),
        effects: s.applied_effects("shipyard", cause).await.unwrap(),
        open: s
            .open_triggers(&open_of(DEPLOYMENT_TRIGGERED))
            .await
            .unwrap(),
        executions: s
            .list_executions(&executions_of(&key.project))
            .await
            .unwrap(),
        due: s.due_lanes(t(i64::from(i32::MAX))).await.unwrap(),
    }
}

/// A committed lane reads back equal: every execution (running and waiting),
/// the unpublished causes and the incarnation.
pub async fn a_lane_reads_back_as_committed<S: SequenceStore>(s: &S) {
    let mut lane = Lane::new("p", "dev", "svc");
    lane.trigger(s, "seq-1", "ctx-1", 10).await;
    lane.trigger(s, "seq-2", "ctx-2", 20).await;
    assert_eq!(lane.state.executions.len(), 2, "one running, one waiting");
    let mut state = lane.state.clone();
    state.unpublished = vec!["tick-1".into(), "abort-\"x\"".into()];
    state.incarnation = "inc-\u{e9}".into();
    Commit::new(&lane.key, lane.version, &state, "cause-3")
        .run(s)
        .await
        .unwrap();
    let back = s.load_lane(&lane.key).await.unwrap().expect("the lane");
    assert_eq!(back.version, lane.version + 1);
    assert_eq!(back.value, state);
    state.unpublished.clear();
    state.incarnation.clear();
    Commit::new(&lane.key, lane.version + 1, &state, "cause-4")
        .run(s)
        .await
        .unwrap();
    assert_eq!(s.load_lane(&lane.key).await.unwrap().unwrap().value, state);
}

/// `commit_lane` writes the lane at `expected_version + 1` when its version is
/// `expected_version` (0 for a lane that does not exist), and fails with
/// `Conflict` changing nothing otherwise.
pub async fn lane_commits_are_conditional_on_the_version<S: SequenceStore>(s: &S) {
    let key = LaneKey::new("p", "dev", "carts");
    assert_eq!(s.load_lane(&key).await.unwrap(), None);
    let trigger = sequence_trigger("seq-1", "ctx-1", &key, 100);
    let d = sequence::handle(
        &LaneState::default(),
        Input::Trigger {
            event: &trigger,
            spec: Ok(spec()),
            paused: false,
        },
        t(100),
        &cfg(),
    );
    assert_eq!(
        sequence::open_triggers(&d.lane).len(),
        1,
        "fixture: a started task"
    );

    let first = Commit {
        effects: &d.emit,
        next_wakeup: Some(t(500)),
        ..Commit::new(&key, 1, &d.lane, "seq-1")
    };
    let before = snapshot(s, &key, "seq-1").await;
    expect_err(first.run(s).await, "Conflict");
    assert_eq!(
        snapshot(s, &key, "seq-1").await,
        before,
        "a conflicting commit changes nothing"
    );
    assert_eq!(before.lane, None);
    assert_eq!(before.effects, None);

    Commit {
        expected_version: 0,
        ..first
    }
    .run(s)
    .await
    .unwrap();
    assert_eq!(
        s.load_lane(&key).await.unwrap(),
        Some(Versioned {
            version: 1,
            value: d.lane.clone()
        })
    );

    let empty = LaneState::default();
    let before = snapshot(s, &key, "other").await;
    expect_err(
        Commit::new(&key, 0, &empty, "other").run(s).await,
        "Conflict",
    );
    expect_err(
        Commit::new(&key, 2, &empty, "other").run(s).await,
        "Conflict",
    );
    assert_eq!(snapshot(s, &key, "other").await, before);

    Commit::new(&key, 1, &empty, "other").run(s).await.unwrap();
    assert_eq!(
        s.load_lane(&key).await.unwrap(),
        Some(Versioned {
            version: 2,
            value: empty.clone()
        })
    );
    Commit::new(&key, 2, &d.lane, "third").run(s).await.unwrap();
    assert_eq!(s.load_lane(&key).await.unwrap().map(|v| v.version), Some(3));
    assert_eq!(
        s.load_lane(&LaneKey::new("p", "dev", "other"))
            .await
            .unwrap(),
        None
    );
}

/// A (consumer, cause) pair commits once: a second commit of it fails with
/// `AlreadyApplied` (even with the right version, checked before the version)
/// and changes nothing; another consumer may apply the same cause.
pub async fn a_cause_is_applied_once_and_a_rejected_commit_changes_nothing<S: SequenceStore>(
    s: &S,
) {
    let mut lane = Lane::new("p", "dev", "carts");
    let d = lane.trigger(s, "seq-1", "ctx-1", 100).await;
    assert!(!d.emit.is_empty(), "fixture: a task trigger was emitted");
    let before = snapshot(s, &lane.key, "seq-1").await;
    assert_eq!(before.effects.as_deref(), Some(d.emit.as_slice()));

    let empty = LaneState::default();
    let replay = Commit {
        next_wakeup: Some(t(0)),
        ..Commit::new(&lane.key, 1, &empty, "seq-1")
    };
    expect_err(replay.run(s).await, "AlreadyApplied");
    expect_err(
        Commit {
            expected_version: 7,
            ..replay
        }
        .run(s)
        .await,
        "AlreadyApplied",
    );
    assert_eq!(
        snapshot(s, &lane.key, "seq-1").await,
        before,
        "a rejected commit changes nothing"
    );

    Commit {
        consumer: "auditor",
        ..replay
    }
    .run(s)
    .await
    .unwrap();
    assert_eq!(
        s.load_lane(&lane.key).await.unwrap(),
        Some(Versioned {
            version: 2,
            value: empty
        })
    );
    assert_eq!(
        s.applied_effects("auditor", "seq-1").await.unwrap(),
        Some(vec![])
    );
    assert_eq!(
        s.applied_effects("shipyard", "seq-1").await.unwrap(),
        Some(d.emit)
    );
}

/// `record_applied` records once (false afterwards) and its effects read back
/// equal; `commit_lane` of a recorded cause is `AlreadyApplied`.
pub async fn applied_effects_round_trip<S: SequenceStore>(s: &S) {
    assert_eq!(s.applied_effects("c", "x").await.unwrap(), None);
    let mut e1 = ev("e1", DEPLOYMENT_TRIGGERED, "ctx", ("p", "dev", "carts"), 1);
    e1.extensions.insert("traceparent".into(), json!("00-1"));
    e1.gitcommitid = Some("abc".into());
    let mut e2 = ev(
        "e2",
        "sh.keptn.event.dev.delivery.finished",
        "ctx",
        ("p", "dev", "carts"),
        2,
    );
    e2.triggeredid = Some("seq".into());
    e2.data["result"] = json!("pass");

    assert!(s
        .record_applied(
            "c",
            "x",
            &[e1.clone(), e2.clone()],
            Timestamp::from_millis(1_000)
        )
        .await
        .unwrap());
    assert!(!s
        .record_applied("c", "x", &[], Timestamp::from_millis(1_000))
        .await
        .unwrap());
    assert_eq!(
        s.applied_effects("c", "x").await.unwrap(),
        Some(vec![e1, e2])
    );
    assert!(s
        .record_applied("c", "none", &[], Timestamp::from_millis(1_000))
        .await
        .unwrap());
    assert_eq!(s.applied_effects("c", "none").await.unwrap(), Some(vec![]));
    assert!(
        s.record_applied("other", "x", &[], Timestamp::from_millis(1_000))
            .await
            .unwrap(),
        "records are per consumer"
    );
    assert_eq!(s.applied_effects("other", "x").await.unwrap(), Some(vec![]));
    assert_eq!(s.applied_effects("c", "y").await.unwrap(), None);

    let key = LaneKey::new("p", "dev", "carts");
    let state = LaneState::default();
    expect_err(
        Commit {
            consumer: "c",
            ..Commit::new(&key, 0, &state, "x")
        }
        .run(s)
        .await,
        "AlreadyApplied",
    );
    assert_eq!(s.load_lane(&key).await.unwrap(), None);
}

/// `applied_or_lane` answers the applied record's effects when there is one
/// for that consumer and cause, else the lane as `load_lane` reads it.
pub async fn applied_or_lane_reads_the_record_else_the_lane<S: SequenceStore>(s: &S) {
    let key = LaneKey::new("p", "dev", "carts");
    let other = LaneKey::new("p", "dev", "orders");
    assert_eq!(
        s.applied_or_lane("shipyard", "e1", &key).await.unwrap(),
        AppliedOrLane::Lane(None)
    );
    let state = LaneState {
        incarnation: "inc-1".into(),
        ..LaneState::default()
    };
    let fx = ev("fx", DEPLOYMENT_TRIGGERED, "ctx", ("p", "dev", "carts"), 1);
    Commit {
        effects: std::slice::from_ref(&fx),
        ..Commit::new(&key, 0, &state, "e1")
    }
    .run(s)
    .await
    .unwrap();
    assert_eq!(
        s.applied_or_lane("shipyard", "e1", &key).await.unwrap(),
        AppliedOrLane::Applied(vec![fx]),
        "an applied cause answers its effects, whatever lane is asked"
    );
    assert_eq!(
        s.applied_or_lane("shipyard", "e1", &other).await.unwrap(),
        AppliedOrLane::Applied(s.applied_effects("shipyard", "e1").await.unwrap().unwrap())
    );
    assert_eq!(
        s.applied_or_lane("auditor", "e1", &key).await.unwrap(),
        AppliedOrLane::Lane(s.load_lane(&key).await.unwrap()),
        "records are per consumer"
    );
    let AppliedOrLane::Lane(Some(lane)) = s.applied_or_lane("shipyard", "e2", &key).await.unwrap()
    else {
        panic!("the lane written by e1 was not read");
    };
    assert_eq!(lane.version, 1);
    assert_eq!(lane.value.incarnation, "inc-1");
    assert_eq!(
        s.applied_or_lane("shipyard", "e2", &other).await.unwrap(),
        AppliedOrLane::Lane(None)
    );
}

/// `due_lanes(now)` lists the lanes whose next wake-up is at or before `now`.
pub async fn due_lanes_are_those_whose_wakeup_has_come<S: SequenceStore>(s: &S) {
    let (a, b, c) = (
        LaneKey::new("p", "dev", "a"),
        LaneKey::new("p", "dev", "b"),
        LaneKey::new("p", "prod", "c"),
    );
    let st = LaneState::default();
    assert!(s.due_lanes(t(10_000)).await.unwrap().is_empty());
    Commit {
        next_wakeup: Some(t(1000)),
        ..Commit::new(&a, 0, &st, "a1")
    }
    .run(s)
    .await
    .unwrap();
    Commit {
        next_wakeup: Some(t(2000)),
        ..Commit::new(&b, 0, &st, "b1")
    }
    .run(s)
    .await
    .unwrap();
    Commit::new(&c, 0, &st, "c1").run(s).await.unwrap();
    let due = |ms: i64| async move {
        let mut v = s.due_lanes(t(ms)).await.unwrap();
        v.sort();
        v
    };
    assert_eq!(due(999).await, Vec::<LaneKey>::new());
    assert_eq!(due(1000).await, vec![a.clone()]);
    assert_eq!(due(5000).await, [a.clone(), b.clone()]);
    Commit::new(&a, 1, &st, "a2").run(s).await.unwrap();
    assert_eq!(
        due(5000).await,
        vec![b.clone()],
        "a commit without a wake-up clears it"
    );

    // A started task is due when its started-timeout runs out.
    let mut lane = Lane::new("q", "dev", "carts");
    lane.trigger(s, "seq", "ctx", 100).await;
    let timeout = cfg().task_started_timeout_ms;
    assert!(!due(100 + timeout - 1).await.contains(&lane.key));
    assert!(due(100 + timeout).await.contains(&lane.key));
}

/// Every execution of a commit's lane state and its ended list is stored by id
/// (active unless ended); `list_executions` filters by project, context, stage,
/// service and activity, oldest trigger first (then by id).
pub async fn executions_are_projected_with_their_activity<S: SequenceStore>(s: &S) {
    let mut dev = Lane::new("p", "dev", "carts");
    dev.trigger(s, "ex-1", "c1", 1000).await;
    dev.trigger(s, "ex-2", "c2", 2000).await;
    assert!(dev.state.executions[1].waiting, "fixture: ex-2 is queued");
    let mut prod = Lane::new("p", "prod", "carts");
    prod.trigger(s, "ex-3", "c1", 1500).await;
    let mut orders = Lane::new("p", "dev", "orders");
    orders.trigger(s, "ex-0", "c3", 1500).await;
    let mut elsewhere = Lane::new("q", "dev", "carts");
    elsewhere.trigger(s, "ex-q", "c1", 500).await;

    let d = dev
        .apply(
            s,
            Input::Control {
                keptn_context: "c1",
                action: ControlAction::Abort,
            },
            3000,
            "abort-c1",
        )
        .await;
    assert_eq!(d.ended.len(), 1, "fixture: ex-1 ended");
    let ex1 = d.ended[0].clone();
    assert!(ex1.state.is_terminal());

    let list = |f: ExecutionFilter| async move {
        s.list_executions(&f)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect::<Vec<_>>()
    };
    let p = || executions_of("p");
    let some = |v: &str| Some(v.to_string());
    assert_eq!(list(p()).await, ["ex-1", "ex-0", "ex-3", "ex-2"]);
    assert_eq!(
        list(ExecutionFilter {
            active_only: true,
            ..p()
        })
        .await,
        ["ex-0", "ex-3", "ex-2"]
    );
    assert_eq!(
        list(ExecutionFilter {
            keptn_context: some("c1"),
            ..p()
        })
        .await,
        ["ex-1", "ex-3"]
    );
    assert_eq!(
        list(ExecutionFilter {
            keptn_context: some("c1"),
            active_only: true,
            ..p()
        })
        .await,
        ["ex-3"]
    );
    assert_eq!(
        list(ExecutionFilter {
            stage: some("prod"),
            ..p()
        })
        .await,
        ["ex-3"]
    );
    assert_eq!(
        list(ExecutionFilter {
            stage: some("dev"),
            service: some("carts"),
            ..p()
        })
        .await,
        ["ex-1", "ex-2"]
    );
    assert_eq!(
        list(ExecutionFilter {
            service: some("orders"),
            ..p()
        })
        .await,
        ["ex-0"]
    );
    assert_eq!(list(executions_of("q")).await, ["ex-q"]);
    assert_eq!(list(executions_of("none")).await, Vec::<String>::new());

    let all = s.list_executions(&p()).await.unwrap();
    assert_eq!(all[0], ex1, "the ended execution as it ended");
    assert_eq!(
        all[3], dev.state.executions[0],
        "ex-2 as the lane now has it (started)"
    );
    assert_eq!(all[2], prod.state.executions[0]);
}

/// A lane commit replaces the lane's open task triggers with those of its new
/// state; `open_triggers` filters by type, project, stage, service and id, oldest first.
pub async fn open_triggers_are_replaced_on_every_lane_commit<S: SequenceStore>(s: &S) {
    let mut dev = Lane::new("p", "dev", "carts");
    dev.trigger(s, "seq-dev", "c1", 1000).await;
    let d1 = sequence::open_triggers(&dev.state)[0].clone();
    assert_eq!(d1.ty, DEPLOYMENT_TRIGGERED, "fixture");
    let open = |f: OpenTriggerFilter| async move { s.open_triggers(&f).await.unwrap() };
    let some = |v: &str| Some(v.to_string());
    let dep = || open_of(DEPLOYMENT_TRIGGERED);
    assert_eq!(open(dep()).await, vec![d1.clone()]);
    for (f, hit) in [
        (
            OpenTriggerFilter {
                project: some("p"),
                ..dep()
            },
            true,
        ),
        (
            OpenTriggerFilter {
                project: some("other"),
                ..dep()
            },
            false,
        ),
        (
            OpenTriggerFilter {
                stage: some("dev"),
                ..dep()
            },
            true,
        ),
        (
            OpenTriggerFilter {
                stage: some("prod"),
                ..dep()
            },
            false,
        ),
        (
            OpenTriggerFilter {
                service: some("carts"),
                ..dep()
            },
            true,
        ),
        (
            OpenTriggerFilter {
                service: some("orders"),
                ..dep()
            },
            false,
        ),
        (
            OpenTriggerFilter {
                event_id: some(&d1.id),
                project: some("p"),
                ..dep()
            },
            true,
        ),
        (
            OpenTriggerFilter {
                event_id: some("nope"),
                ..dep()
            },
            false,
        ),
        (open_of(TEST_TRIGGERED), false),
    ] {
        let want = if hit { vec![d1.clone()] } else { vec![] };
        assert_eq!(open(f.clone()).await, want, "{f:?}");
    }

    let mut prod = Lane::new("p", "prod", "carts");
    prod.trigger(s, "seq-prod", "c2", 2000).await;
    let d2 = sequence::open_triggers(&prod.state)[0].clone();
    assert_eq!(open(dep()).await, [d1.clone(), d2.clone()], "oldest first");

    // Commits that keep a trigger open (the sequence paused and resumed
    // while its task runs) keep it stored, once.
    for (action, at) in [(ControlAction::Pause, 2500), (ControlAction::Resume, 2600)] {
        let d = dev
            .apply(
                s,
                Input::Control {
                    keptn_context: "c1",
                    action,
                },
                at,
                &format!("{action:?}"),
            )
            .await;
        assert!(d.changed, "fixture: {action:?} changes the lane");
        assert_eq!(open(dep()).await, [d1.clone(), d2.clone()], "{action:?}");
    }

    dev.finish_task(s, "c1", 3000).await;
    let t1 = sequence::open_triggers(&dev.state)[0].clone();
    assert_eq!(t1.ty, TEST_TRIGGERED, "fixture: the next task is open");
    assert_eq!(open(dep()).await, vec![d2.clone()]);
    assert_eq!(open(open_of(TEST_TRIGGERED)).await, [t1]);

    dev.apply(
        s,
        Input::Control {
            keptn_context: "c1",
            action: ControlAction::Abort,
        },
        4000,
        "abort",
    )
    .await;
    assert!(
        open(open_of(TEST_TRIGGERED)).await.is_empty(),
        "a lane without open triggers has none stored"
    );
    assert_eq!(open(dep()).await, [d2]);
}

/// Pause marks are per context (whole) or per stage of it; `is_paused` is true
/// if either applies. Resuming a stage clears that stage's mark; resuming the
/// whole context clears every mark of the context.
pub async fn pause_marks_cover_a_context_or_one_stage<S: SequenceStore>(s: &S) {
    let paused = |stage: &'static str| async move { s.is_paused("p", "c", stage).await.unwrap() };
    assert!(!paused("dev").await);

    s.set_paused("p", "c", Some("dev"), true).await.unwrap();
    s.set_paused("p", "c", Some("dev"), true).await.unwrap();
    assert!(paused("dev").await);
    assert!(!paused("prod").await);
    assert!(!s.is_paused("p", "other", "dev").await.unwrap());
    assert!(!s.is_paused("q", "c", "dev").await.unwrap());

    s.set_paused("p", "c", None, true).await.unwrap();
    assert!(paused("prod").await);
    s.set_paused("p", "c", Some("dev"), false).await.unwrap();
    assert!(paused("dev").await, "the whole context is still paused");

    s.set_paused("p", "c", Some("prod"), true).await.unwrap();
    s.set_paused("p", "c", None, false).await.unwrap();
    assert!(!paused("dev").await);
    assert!(
        !paused("prod").await,
        "resuming the context resumes its stages"
    );
    s.set_paused("p", "c", None, false).await.unwrap();
    s.set_paused("p", "c", Some("dev"), false).await.unwrap();

    s.set_paused("p", "c", Some("prod"), true).await.unwrap();
    s.set_paused("p", "c", Some("prod"), false).await.unwrap();
    assert!(!paused("prod").await);
}

/// `purge_applied(before)` forgets applied records older than `before` (both
/// kinds: lane commits and stateless records) and keeps the rest; a purged
/// cause could be applied again.
pub async fn applied_records_older_than_the_window_are_purged<S: SequenceStore>(s: &S) {
    assert!(s
        .record_applied("c", "old", &[], Timestamp::from_millis(1_000))
        .await
        .unwrap());
    assert!(s
        .record_applied("c", "new", &[], Timestamp::from_millis(5_000))
        .await
        .unwrap());
    let key = LaneKey::new("p", "dev", "carts");
    s.commit_lane(LaneCommit {
        key: &key,
        expected_version: 0,
        state: &LaneState::default(),
        ended: &[],
        next_wakeup: None,
        consumer: "c",
        cause_id: "lane-old",
        effects: &[],
        now: Timestamp::from_millis(2_000),
    })
    .await
    .unwrap();
    assert_eq!(
        s.purge_applied(Timestamp::from_millis(5_000))
            .await
            .unwrap(),
        2
    );
    assert_eq!(s.applied_effects("c", "old").await.unwrap(), None);
    assert_eq!(s.applied_effects("c", "lane-old").await.unwrap(), None);
    assert_eq!(s.applied_effects("c", "new").await.unwrap(), Some(vec![]));
    assert_eq!(
        s.purge_applied(Timestamp::from_millis(5_000))
            .await
            .unwrap(),
        0
    );
    assert!(s
        .record_applied("c", "old", &[], Timestamp::from_millis(6_000))
        .await
        .unwrap());
}

/// `recent_effects(consumer, window)` returns the effects of the consumer's
/// applied records within `window` ms of its newest one, oldest first.
pub async fn recent_effects_are_those_near_the_newest_record<S: SequenceStore>(s: &S) {
    let e = |id: &str| {
        ev(
            id,
            "sh.keptn.event.deployment.triggered",
            "ctx",
            ("p", "dev", "carts"),
            1,
        )
    };
    assert!(s.recent_effects("c", 10_000).await.unwrap().is_empty());
    s.record_applied("c", "a", &[e("e1")], Timestamp::from_millis(1_000))
        .await
        .unwrap();
    s.record_applied("c", "c", &[e("e3")], Timestamp::from_millis(59_000))
        .await
        .unwrap();
    s.record_applied("c", "b", &[e("e2")], Timestamp::from_millis(50_000))
        .await
        .unwrap();
    s.record_applied("other", "d", &[e("e4")], Timestamp::from_millis(100_000))
        .await
        .unwrap();
    let ids = |v: Vec<KeptnEvent>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.recent_effects("c", 10_000).await.unwrap()),
        ["e2", "e3"]
    );
    assert_eq!(ids(s.recent_effects("c", 0).await.unwrap()), ["e3"]);
    assert_eq!(
        ids(s.recent_effects("c", 100_000).await.unwrap()),
        ["e1", "e2", "e3"]
    );
    assert_eq!(
        ids(s.recent_effects("nobody", 100_000).await.unwrap()),
        Vec::<String>::new()
    );
}
