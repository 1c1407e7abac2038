use super::*;
use crate::shipyard::Shipyard;

const SHIPYARD: &str = r#"
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: s}
spec:
  stages:
    - name: dev
      sequences:
        - name: delivery
          tasks:
            - name: deployment
              properties: {deploymentstrategy: direct}
            - name: test
            - name: release
        - name: delayed
          tasks:
            - name: deployment
              triggeredAfter: 5m
    - name: prod
      sequences:
        - name: delivery
          triggeredOn: [{event: dev.delivery.finished}]
          tasks:
            - name: approval
              properties: {pass: automatic, warning: manual}
            - name: deployment
        - name: rollback
          triggeredOn: [{event: dev.delivery.finished, selector: {match: {result: fail}}}]
          tasks: [{name: rollback}]
"#;

fn sy() -> Shipyard {
    Shipyard::parse(SHIPYARD).unwrap()
}

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + ms)
}

fn trigger(id: &str, ctx: &str, stage: &str, seq: &str) -> KeptnEvent {
    KeptnEvent::new(
        id.into(),
        "cli",
        sequence_type(stage, seq, "triggered"),
        ctx,
        json!({"project":"p","stage":stage,"service":"svc","labels":{"build":"1"},
               "configurationChange":{"values":{"image":"img:1"}}}),
        t(0),
    )
}

fn task_ev(
    id: &str,
    task_trigger: &KeptnEvent,
    kind: &str,
    result: &str,
    status: &str,
) -> KeptnEvent {
    let task = match task_trigger.event_type() {
        EventType::Task { task, .. } => task,
        _ => panic!("not a task trigger"),
    };
    let mut data = json!({"project":"p","stage":task_trigger.stage().unwrap(),"service":"svc"});
    if kind == "finished" {
        data["result"] = json!(result);
        data["status"] = json!(status);
        data["message"] = json!(format!("{id} done"));
        data[task.as_str()] = json!({"by": id});
    }
    let mut e = KeptnEvent::new(
        id.into(),
        "executor",
        task_type(&task, kind),
        &task_trigger.shkeptncontext,
        data,
        t(1),
    );
    e.triggeredid = Some(task_trigger.id.clone());
    e
}

struct Lane {
    state: LaneState,
    emitted: Vec<KeptnEvent>,
    ended: Vec<Execution>,
    cfg: Config,
}

impl Lane {
    fn new() -> Self {
        Lane {
            state: LaneState::default(),
            emitted: vec![],
            ended: vec![],
            cfg: Config::default(),
        }
    }
    fn apply(&mut self, input: Input<'_>, now: Timestamp) -> Vec<KeptnEvent> {
        let d = handle(&self.state, input, now, &self.cfg);
        self.state = d.lane;
        self.ended.extend(d.ended);
        self.emitted.extend(d.emit.clone());
        d.emit
    }
    fn trigger(&mut self, ev: &KeptnEvent) -> Vec<KeptnEvent> {
        let (stage, seq) = match ev.event_type() {
            EventType::Sequence {
                stage, sequence, ..
            } => (stage, sequence),
            _ => panic!(),
        };
        let spec = trigger_spec(&sy(), &stage, &seq, Some("c1".into()));
        self.apply(
            Input::Trigger {
                event: ev,
                spec,
                paused: false,
            },
            t(0),
        )
    }
    fn task(&mut self, ev: &KeptnEvent) -> Vec<KeptnEvent> {
        self.apply(Input::TaskEvent(ev), t(2))
    }
    fn types(&self) -> Vec<String> {
        self.emitted.iter().map(|e| e.ty.clone()).collect()
    }
    fn last(&self) -> KeptnEvent {
        self.emitted.last().unwrap().clone()
    }
    /// Runs the current task of the only active execution with one executor.
    fn run_task(&mut self, n: &str, result: &str) -> Vec<KeptnEvent> {
        let trig = self.last();
        self.task(&task_ev(&format!("{n}-s"), &trig, "started", "", ""));
        self.task(&task_ev(
            &format!("{n}-f"),
            &trig,
            "finished",
            result,
            "succeeded",
        ))
    }
}

#[test]
fn a_sequence_runs_its_tasks_in_order_and_finishes_with_follow_ups() {
    let mut l = Lane::new();
    let out = l.trigger(&trigger("tr1", "ctx", "dev", "delivery"));
    assert_eq!(out.len(), 1);
    let dep = &out[0];
    assert_eq!(dep.ty, "sh.keptn.event.deployment.triggered");
    assert_eq!(dep.source, SOURCE);
    assert_eq!(dep.triggeredid, None);
    assert_eq!(dep.gitcommitid.as_deref(), Some("c1"));
    assert_eq!(
        dep.data["deployment"]["deploymentstrategy"],
        json!("direct")
    );
    assert_eq!(
        dep.data["configurationChange"]["values"]["image"],
        json!("img:1")
    );
    l.run_task("d", "pass");
    let test_trig = l.last();
    assert_eq!(test_trig.ty, "sh.keptn.event.test.triggered");
    // §2.4: previous task properties merged, result/status of the last task set.
    assert_eq!(test_trig.data["deployment"]["by"], json!("d-f"));
    assert_eq!(test_trig.data["result"], json!("pass"));
    assert_eq!(test_trig.data["message"], json!(""));
    l.run_task("t", "warning");
    let out = l.run_task("r", "pass");
    let types: Vec<&str> = out.iter().map(|e| e.ty.as_str()).collect();
    // Order on the wire: stage .finished first, then the follow-up trigger(s).
    assert_eq!(
        types,
        vec![
            "sh.keptn.event.dev.delivery.finished",
            "sh.keptn.event.prod.delivery.triggered"
        ]
    );
    let fin = &out[0];
    assert_eq!(fin.triggeredid.as_deref(), Some("tr1"));
    assert_eq!(fin.data["result"], json!("pass")); // quirk 2.11-a kept: last task's result
    assert_eq!(fin.data["status"], json!("succeeded"));
    assert_eq!(fin.data["labels"]["build"], json!("1"));
    let fu = &out[1];
    assert_eq!(fu.data["stage"], json!("prod"));
    assert_eq!(
        fu.data["configurationChange"]["values"]["image"],
        json!("img:1")
    );
    assert_eq!(fu.shkeptncontext, "ctx");
    // The follow-up's time is after the stage's .finished, so a store that
    // orders by time lists them in causal order.
    assert!(fu.time > fin.time, "{:?} !> {:?}", fu.time, fin.time);
    assert!(l.state.executions.is_empty());
    assert_eq!(l.ended.len(), 1);
    assert_eq!(l.ended[0].state, ExecState::Finished);
}

#[test]
fn a_failing_task_stops_the_sequence_and_fires_the_fail_selector() {
    let mut l = Lane::new();
    l.trigger(&trigger("tr1", "ctx", "dev", "delivery"));
    let out = l.run_task("d", "fail");
    let types: Vec<&str> = out.iter().map(|e| e.ty.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "sh.keptn.event.dev.delivery.finished",
            "sh.keptn.event.prod.rollback.triggered"
        ]
    );
    assert_eq!(out[0].data["result"], json!("fail"));
    assert!(!l
        .types()
        .contains(&"sh.keptn.event.test.triggered".to_string()));
}

#[test]
fn an_errored_task_stops_the_sequence() {
    let mut l = Lane::new();
    l.trigger(&trigger("tr1", "ctx", "dev", "delivery"));
    let trig = l.last();
    l.task(&task_ev("s", &trig, "started", "", ""));
    let out = l.task(&task_ev("f", &trig, "finished", "pass", "errored"));
    assert_eq!(out[0].ty, "sh.keptn.event.dev.delivery.finished");
    assert_eq!(out[0].data["status"], json!("errored"));
}

#[test]
fn finished_before_started_waits_for_the_started() {
    let mut l = Lane::new();
    l.trigger(&trigger("tr1", "ctx", "dev", "delivery"));
    let trig = l.last();
    assert!(l
        .task(&task_ev("f", &trig, "finished", "pass", "succeeded"))
        .is_empty());
    let out = l.task(&task_ev("s", &trig, "started", "", ""));
    assert_eq!(out[0].ty, "sh.keptn.event.test.triggered");
}

#[test]
fn two_executors_must_both_finish() {
    let mut l = Lane::new();
    l.trigger(&trigger("tr1", "ctx", "dev", "delivery"));
    let trig = l.last();
    l.task(&task_ev("s1", &trig, "started", "", ""));
    l.task(&task_ev("s2", &trig, "started", "", ""));
    assert!(l
        .task(&task_ev("f1", &trig, "finished", "pass", "succeeded"))
        .is_empty());
    let out = l.task(&task_ev("f2", &trig, "finished", "warning", "succeeded"));
    assert_eq!(out[0].ty, "sh.keptn.event.test.triggered");
    assert_eq!(out[0].data["result"], json!("warning"));
}

#[test]
fn duplicate_started_and_finished_events_are_ignored() {
    let mut l = Lane::new();
    l.trigger(&trigger("tr1", "ctx", "dev", "delivery"));
    let trig = l.last();
    let s = task_ev("s1", &trig, "started", "", "");
    l.task(&s);
    let d = handle(&l.state, Input::TaskEvent(&s), t(3), &l.cfg);
    assert!(!d.changed && d.emit.is_empty());
    let f = task_ev("f1", &trig, "finished", "pass", "succeeded");
    let out = l.task(&f);
    assert_eq!(out.len(), 1);
    let d = handle(&l.state, Input::TaskEvent(&f), t(3), &l.cfg);
    assert!(!d.changed && d.emit.is_empty());
}

#[test]
fn duplicate_sequence_trigger_is_ignored() {
    let mut l = Lane::new();
    let tr = trigger("tr1", "ctx", "dev", "delivery");
    l.trigger(&tr);
    assert!(l.trigger(&tr).is_empty());
    assert_eq!(l.state.executions.len(), 1);
}

#[test]
fn task_events_for_unknown_triggers_or_contexts_are_ignored() {
    let mut l = Lane::new();
    l.trigger(&trigger("tr1", "ctx", "dev", "delivery"));
    let trig = l.last();
    let mut other_ctx = task_ev("f", &trig, "finished", "pass", "succeeded");
    other_ctx.shkeptncontext = "other".into();
    let d = handle(&l.state, Input::TaskEvent(&other_ctx), t(3), &l.cfg);
    assert!(!d.changed);
    let mut unknown = task_ev("f", &trig, "finished", "pass", "succeeded");
    unknown.triggeredid = Some("nope".into());
    assert!(!handle(&l.state, Input::TaskEvent(&unknown), t(3), &l.cfg).changed);
}

#[test]
fn result_and_status_aggregation_table() {
    let rec = |r: &str, s: &str| TaskEventRecord {
        id: format!("{r}{s}"),
        source: "x".into(),
        time: t(0),
        data: json!({"result": r, "status": s}),
    };
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (vec![("pass", "succeeded")], "pass", "succeeded"),
        (
            vec![("pass", "succeeded"), ("warning", "succeeded")],
            "warning",
            "succeeded",
        ),
        (
            vec![("warning", "succeeded"), ("fail", "succeeded")],
            "fail",
            "succeeded",
        ),
        (vec![("", "succeeded")], "fail", "succeeded"),
        (vec![("bogus", "succeeded")], "fail", "succeeded"),
        (
            vec![("pass", "errored"), ("pass", "aborted")],
            "pass",
            "errored",
        ),
        (
            vec![("pass", "aborted"), ("pass", "succeeded")],
            "pass",
            "aborted",
        ),
        (
            vec![("pass", "succeeded"), ("pass", "unknown")],
            "fail",
            "unknown",
        ),
    ];
    for (events, result, status) in cases {
        let cur = CurrentTask {
            name: "x".into(),
            index: 0,
            event: trigger("e", "c", "dev", "delivery"),
            due_at: t(0),
            emitted_at: Some(t(0)),
            started: vec![],
            finished: events.iter().map(|(r, s)| rec(r, s)).collect(),
        };
        let agg = aggregate(&cur);
        assert_eq!(
            (agg.result.as_str(), agg.status.as_str()),
            (result, status),
            "{events:?}"
        );
    }
}

#[test]
fn aborted_status_with_pass_continues_the_sequence() {
    let mut l = Lane::new();
    l.trigger(&trigger("tr1", "ctx", "dev", "delivery"));
    let trig = l.last();
    l.task(&task_ev("s", &trig, "started", "", ""));
    let out = l.task(&task_ev("f", &trig, "finished", "pass", "aborted"));
    assert_eq!(out[0].ty, "sh.keptn.event.test.triggered");
}

#[test]
fn a_second_sequence_for_the_lane_waits_and_starts_in_fifo_order() {
    let mut l = Lane::new();
    l.trigger(&trigger("a", "ctx-a", "dev", "delivery"));
    assert!(l
        .trigger(&trigger("b", "ctx-b", "dev", "delivery"))
        .is_empty());
    assert!(l
        .trigger(&trigger("c", "ctx-c", "dev", "delivery"))
        .is_empty());
    assert!(l.state.executions[1].waiting && l.state.executions[2].waiting);
    l.run_task("a1", "pass");
    l.run_task("a2", "pass");
    let out = l.run_task("a3", "pass");
    assert_eq!(out[0].ty, "sh.keptn.event.dev.delivery.finished");
    let next = out
        .iter()
        .find(|e| e.ty == "sh.keptn.event.deployment.triggered")
        .unwrap();
    assert_eq!(next.shkeptncontext, "ctx-b");
    assert_eq!(l.state.executions[0].keptn_context, "ctx-b");
    assert_eq!(l.state.executions[0].state, ExecState::Started);
    assert_eq!(l.state.executions[1].state, ExecState::Triggered);
}

#[test]
fn a_waiting_approval_holds_the_lane() {
    let mut l = Lane::new();
    l.trigger(&trigger("a", "ctx-a", "prod", "delivery"));
    assert_eq!(l.last().ty, "sh.keptn.event.approval.triggered");
    assert_eq!(l.state.executions[0].state, ExecState::WaitingForApproval);
    assert!(l
        .trigger(&trigger("b", "ctx-b", "prod", "delivery"))
        .is_empty());
}

#[test]
fn unknown_sequence_or_stage_finishes_errored_at_once() {
    let mut l = Lane::new();
    let out = l.trigger(&trigger("x", "ctx", "dev", "nope"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].ty, "sh.keptn.event.dev.nope.finished");
    assert_eq!(out[0].triggeredid.as_deref(), Some("x"));
    assert_eq!(out[0].data["status"], json!("errored"));
    assert_eq!(out[0].data["result"], json!("fail"));
    assert_eq!(
        out[0].data["message"],
        json!("Unable to start sequence nope: no task sequence with name nope found in stage dev")
    );
    assert!(l.state.executions.is_empty());
}

#[test]
fn builtin_evaluation_sequence_runs_one_task() {
    let mut l = Lane::new();
    let out = l.trigger(&trigger("e", "ctx", "dev", "evaluation"));
    assert_eq!(out[0].ty, "sh.keptn.event.evaluation.triggered");
    let trig = l.last();
    l.task(&task_ev("s", &trig, "started", "", ""));
    let mut fin = task_ev("f", &trig, "finished", "pass", "succeeded");
    fin.data["evaluation"] = json!({"result":"pass","score":95.5});
    let out = l.task(&fin);
    assert_eq!(out[0].ty, "sh.keptn.event.dev.evaluation.finished");
    assert_eq!(
        l.ended[0].latest_evaluation,
        Some(EvaluationRef {
            result: "pass".into(),
            score: 95.5
        })
    );
}

#[test]
fn triggered_after_delays_the_task_until_a_tick_when_due() {
    let mut l = Lane::new();
    assert!(l.trigger(&trigger("d", "ctx", "dev", "delayed")).is_empty());
    assert_eq!(next_wakeup(&l.state, &l.cfg), Some(t(300_000)));
    assert!(open_triggers(&l.state).is_empty());
    assert!(l.apply(Input::Tick, t(299_999)).is_empty());
    let out = l.apply(Input::Tick, t(300_000));
    assert_eq!(out[0].ty, "sh.keptn.event.deployment.triggered");
    assert_eq!(open_triggers(&l.state).len(), 1);
}

#[test]
fn a_task_without_started_times_out_after_the_started_timeout() {
    let mut l = Lane::new();
    l.trigger(&trigger("a", "ctx", "dev", "delivery"));
    assert_eq!(next_wakeup(&l.state, &l.cfg), Some(t(600_000)));
    assert!(l.apply(Input::Tick, t(599_999)).is_empty());
    let out = l.apply(Input::Tick, t(600_000));
    assert_eq!(out.len(), 1, "no follow-ups after a timeout");
    assert_eq!(out[0].ty, "sh.keptn.event.dev.delivery.finished");
    assert_eq!(out[0].data["status"], json!("errored"));
    assert_eq!(out[0].data["result"], json!("fail"));
    assert_eq!(
        out[0].data["message"],
        json!("sequence timed out while waiting for task deployment to receive a correlating .started or .finished event")
    );
    assert_eq!(l.ended[0].state, ExecState::TimedOut);
}

#[test]
fn a_started_task_times_out_only_with_a_finished_timeout_configured() {
    let mut l = Lane::new();
    l.trigger(&trigger("a", "ctx", "dev", "delivery"));
    let trig = l.last();
    l.task(&task_ev("s", &trig, "started", "", ""));
    assert_eq!(next_wakeup(&l.state, &l.cfg), None);
    assert!(l.apply(Input::Tick, t(100_000_000)).is_empty());
    l.cfg.task_finished_timeout_ms = Some(60_000);
    let out = l.apply(Input::Tick, t(100_000_001));
    assert_eq!(out[0].ty, "sh.keptn.event.dev.delivery.finished");
    assert!(out[0].data["message"]
        .as_str()
        .unwrap()
        .contains("to finish"));
}

#[test]
fn approvals_are_exempt_from_the_finished_timeout() {
    let mut l = Lane::new();
    l.cfg.task_finished_timeout_ms = Some(1000);
    l.trigger(&trigger("a", "ctx", "prod", "delivery"));
    let trig = l.last();
    l.task(&task_ev("s", &trig, "started", "", ""));
    assert!(l.apply(Input::Tick, t(10_000_000)).is_empty());
}

#[test]
fn pause_holds_the_next_task_and_resume_releases_it() {
    let mut l = Lane::new();
    l.trigger(&trigger("a", "ctx", "dev", "delivery"));
    l.apply(
        Input::Control {
            keptn_context: "ctx",
            action: ControlAction::Pause,
        },
        t(1),
    );
    let out = l.run_task("d", "pass");
    assert!(out.is_empty(), "the next task waits while paused: {out:?}");
    assert!(open_triggers(&l.state).is_empty());
    let out = l.apply(
        Input::Control {
            keptn_context: "ctx",
            action: ControlAction::Resume,
        },
        t(5),
    );
    assert_eq!(out[0].ty, "sh.keptn.event.test.triggered");
}

#[test]
fn pause_of_another_context_changes_nothing() {
    let mut l = Lane::new();
    l.trigger(&trigger("a", "ctx", "dev", "delivery"));
    let d = handle(
        &l.state,
        Input::Control {
            keptn_context: "zzz",
            action: ControlAction::Pause,
        },
        t(1),
        &l.cfg,
    );
    assert!(!d.changed);
}

#[test]
fn abort_finishes_with_aborted_and_starts_the_next_queued() {
    let mut l = Lane::new();
    l.trigger(&trigger("a", "ctx-a", "dev", "delivery"));
    l.trigger(&trigger("b", "ctx-b", "dev", "delivery"));
    let out = l.apply(
        Input::Control {
            keptn_context: "ctx-a",
            action: ControlAction::Abort,
        },
        t(1),
    );
    assert_eq!(out[0].ty, "sh.keptn.event.dev.delivery.finished");
    assert_eq!(out[0].data["status"], json!("aborted"));
    assert_eq!(out[0].data["result"], json!("pass"));
    assert_eq!(out.len(), 2, "no follow-ups, then the queued one starts");
    assert_eq!(out[1].shkeptncontext, "ctx-b");
    assert_eq!(l.ended[0].state, ExecState::Aborted);
}

#[test]
fn a_paused_queued_sequence_does_not_block_the_queue() {
    let mut l = Lane::new();
    l.trigger(&trigger("a", "ctx-a", "dev", "delivery"));
    let spec = trigger_spec(&sy(), "dev", "delivery", None);
    l.apply(
        Input::Trigger {
            event: &trigger("b", "ctx-b", "dev", "delivery"),
            spec: spec.clone(),
            paused: true,
        },
        t(0),
    );
    l.trigger(&trigger("c", "ctx-c", "dev", "delivery"));
    l.run_task("1", "pass");
    l.run_task("2", "pass");
    let out = l.run_task("3", "pass");
    let started = out
        .iter()
        .find(|e| e.ty == "sh.keptn.event.deployment.triggered")
        .unwrap();
    assert_eq!(started.shkeptncontext, "ctx-c");
}

#[test]
fn emitted_ids_are_deterministic_for_the_same_inputs() {
    let mut a = Lane::new();
    let mut b = Lane::new();
    let tr = trigger("tr1", "ctx", "dev", "delivery");
    assert_eq!(a.trigger(&tr), b.trigger(&tr));
    assert_eq!(a.run_task("d", "pass"), b.run_task("d", "pass"));
}

#[test]
fn later_numbers_win_in_the_payload_merge() {
    let mut l = Lane::new();
    l.trigger(&trigger("tr1", "ctx", "dev", "delivery"));
    let trig = l.last();
    l.task(&task_ev("s", &trig, "started", "", ""));
    let mut f = task_ev("f", &trig, "finished", "pass", "succeeded");
    f.data["get-action"] = json!({"actionIndex": 1});
    f.data["configurationChange"] = json!({"values": {"replicas": 3}});
    l.task(&f);
    let next = l.last();
    assert_eq!(next.data["get-action"]["actionIndex"], json!(1));
    assert_eq!(
        next.data["configurationChange"]["values"]["replicas"],
        json!(3)
    );
}

#[test]
fn a_task_started_by_one_source_and_finished_by_another_completes() {
    // A manual approval: approval-service sends .started, a person's CLI the .finished.
    let mut l = Lane::new();
    l.trigger(&trigger("a", "ctx", "prod", "delivery"));
    let trig = l.last();
    let mut s = task_ev("s", &trig, "started", "", "");
    s.source = "approval-service".into();
    l.task(&s);
    let mut f = task_ev("f", &trig, "finished", "pass", "succeeded");
    f.source = "https://github.com/keptn/keptn/cli#approval.finished".into();
    let out = l.task(&f);
    assert_eq!(out[0].ty, "sh.keptn.event.deployment.triggered");
    assert_eq!(l.state.executions[0].state, ExecState::Started);
}

#[test]
fn the_sequence_view_reports_keptn_states() {
    use crate::view::sequence_states;
    let mut l = Lane::new();
    l.trigger(&trigger("a", "ctx-a", "dev", "delivery"));
    l.trigger(&trigger("b", "ctx-b", "dev", "delivery"));
    let state_of = |execs: &[Execution], ctx: &str| {
        sequence_states(execs)
            .into_iter()
            .find(|s| s.shkeptncontext == ctx)
            .map(|s| (s.state, s.stages[0].state.clone()))
    };
    assert_eq!(
        state_of(&l.state.executions, "ctx-a"),
        Some(("started".into(), "triggered".into()))
    );
    assert_eq!(
        state_of(&l.state.executions, "ctx-b"),
        Some(("waiting".into(), "triggered".into()))
    );
    l.apply(
        Input::Control {
            keptn_context: "ctx-a",
            action: ControlAction::Pause,
        },
        t(1),
    );
    assert_eq!(
        state_of(&l.state.executions, "ctx-a"),
        Some(("paused".into(), "paused".into()))
    );
    l.apply(
        Input::Control {
            keptn_context: "ctx-a",
            action: ControlAction::Abort,
        },
        t(2),
    );
    assert_eq!(
        state_of(&l.ended, "ctx-a"),
        Some(("aborted".into(), "aborted".into()))
    );
    l.apply(Input::Tick, t(2 + 600_000));
    assert_eq!(
        state_of(&l.ended, "ctx-b"),
        Some(("timedOut".into(), "errored".into()))
    );
    let mut f = Lane::new();
    f.trigger(&trigger("c", "ctx-c", "dev", "delivery"));
    f.run_task("1", "pass");
    f.run_task("2", "pass");
    f.run_task("3", "pass");
    let v = sequence_states(&f.ended);
    assert_eq!(
        (v[0].state.as_str(), v[0].stages[0].state.as_str()),
        ("finished", "succeeded")
    );
    assert_eq!(v[0].stages[0].image.as_deref(), Some("img:1"));
    assert_eq!(v[0].name, "delivery");
}
