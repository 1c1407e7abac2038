//! Sequence orchestration (spec §2): the shipyard-controller's rules as a pure
//! state machine over one *lane* — the executions of one project / stage /
//! service, of which at most one is active at a time (FIFO queueing, §2.7).
//!
//! [`handle`] takes the lane's state, one input (a sequence trigger, a task
//! event, a control request or a clock tick) and the time, and returns the new
//! state plus the events to emit. Emitted ids are derived from the execution
//! they belong to, so re-running a step re-emits identical events.

use crate::event::{sequence_type, task_type, EventType, KeptnEvent, Kind};
use crate::ids;
use crate::merge::merge_into;
use crate::shipyard::{FollowUp, Shipyard, Task};
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Source of every event the orchestrator emits (Keptn's name, kept for integrations that filter on it).
pub const SOURCE: &str = "shipyard-controller";

/// Orchestration settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// A task whose `.triggered` got neither `.started` nor `.finished` within this time times the sequence out (Keptn: 10m).
    pub task_started_timeout_ms: i64,
    /// A started task that has not finished within this time (since its `.triggered`) times the
    /// sequence out; `None` waits forever as Keptn did (keptn#7407). Approval tasks are exempt: they wait for people.
    pub task_finished_timeout_ms: Option<i64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            task_started_timeout_ms: 10 * 60 * 1000,
            task_finished_timeout_ms: None,
        }
    }
}

/// Identifies a lane: project / stage / service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LaneKey {
    /// Project.
    pub project: String,
    /// Stage.
    pub stage: String,
    /// Service.
    pub service: String,
}

impl LaneKey {
    /// A lane key.
    pub fn new(project: &str, stage: &str, service: &str) -> Self {
        LaneKey {
            project: project.into(),
            stage: stage.into(),
            service: service.into(),
        }
    }

    /// The lane an event belongs to, from `data.project/stage/service`.
    pub fn of_event(ev: &KeptnEvent) -> Option<LaneKey> {
        Some(LaneKey::new(ev.project()?, ev.stage()?, ev.service()?))
    }

    /// `project/stage/service` (names cannot contain `/`).
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.project, self.stage, self.service)
    }
}

/// Internal state of an execution (Keptn's SequenceExecution.status.state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExecState {
    /// Received, not started (queued).
    Triggered,
    /// Running.
    Started,
    /// Running, current task is an approval.
    WaitingForApproval,
    /// Completed.
    Finished,
    /// Aborted by a user.
    Aborted,
    /// Timed out.
    TimedOut,
}

impl ExecState {
    /// Started and not yet ended.
    pub fn is_active(self) -> bool {
        matches!(self, ExecState::Started | ExecState::WaitingForApproval)
    }
    /// Ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecState::Finished | ExecState::Aborted | ExecState::TimedOut
        )
    }
}

/// A reference to an event, for the sequence view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRef {
    /// Event type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Event id.
    pub id: String,
    /// Event time.
    pub time: Timestamp,
}

/// Latest evaluation shown for a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationRef {
    /// pass / warning / fail.
    pub result: String,
    /// Score (written as Go writes a float64: `50`, not `50.0`).
    #[serde(serialize_with = "crate::slo::serialize_f64")]
    pub score: f64,
}

/// One `.started` or `.finished` received for the current task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEventRecord {
    /// Event id (duplicates are ignored).
    pub id: String,
    /// Emitter.
    pub source: String,
    /// Time.
    pub time: Timestamp,
    /// `data` of a `.finished` (null for `.started`).
    #[serde(default)]
    pub data: Value,
}

/// The task being executed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentTask {
    /// Task name.
    pub name: String,
    /// Index in the sequence.
    pub index: usize,
    /// The task `.triggered` (sent once `emitted_at` is set).
    pub event: KeptnEvent,
    /// When the `.triggered` is due (`triggeredAfter`).
    pub due_at: Timestamp,
    /// When it was sent.
    pub emitted_at: Option<Timestamp>,
    /// `.started` events received.
    pub started: Vec<TaskEventRecord>,
    /// `.finished` events received.
    pub finished: Vec<TaskEventRecord>,
}

impl CurrentTask {
    /// Keptn's done rule: #finished == #started > 0, counted over all
    /// executors. A `.finished` before its `.started` waits for it; two
    /// executors that both started must both finish. Counting per executor
    /// (`source`) was tried and rejected: approvals and webhooks with
    /// `sendFinished: false` are finished by a different source than the one
    /// that started them (docs/compatibility.md).
    pub fn is_done(&self) -> bool {
        !self.finished.is_empty() && self.finished.len() == self.started.len()
    }
}

/// Outcome of a completed task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// Task name.
    pub name: String,
    /// Id of its `.triggered`.
    pub triggered_id: String,
    /// Aggregated result.
    pub result: String,
    /// Aggregated status.
    pub status: String,
    /// Last executor's message.
    #[serde(default)]
    pub message: String,
    /// Deep merge of the `.finished` data in arrival order.
    pub properties: Value,
}

/// One sequence run in one stage (Keptn's SequenceExecution).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// The sequence `.triggered` id.
    pub id: String,
    /// shkeptncontext.
    pub keptn_context: String,
    /// Project.
    pub project: String,
    /// Stage.
    pub stage: String,
    /// Service.
    pub service: String,
    /// Sequence name.
    pub sequence: String,
    /// Tasks, as the shipyard had them when the sequence was triggered.
    pub tasks: Vec<Task>,
    /// Follow-ups of `<stage>.<sequence>.finished` in that shipyard.
    pub follow_ups: Vec<FollowUp>,
    /// Configuration version the sequence runs with.
    pub gitcommitid: Option<String>,
    /// The trigger's `data`.
    pub input: Value,
    /// State.
    pub state: ExecState,
    /// Paused by a user.
    #[serde(default)]
    pub paused: bool,
    /// Queued behind another execution.
    #[serde(default)]
    pub waiting: bool,
    /// When triggered.
    pub triggered_at: Timestamp,
    /// When started.
    pub started_at: Option<Timestamp>,
    /// When ended.
    pub finished_at: Option<Timestamp>,
    /// Completed tasks in order.
    pub previous_tasks: Vec<TaskResult>,
    /// The running task.
    pub current: Option<CurrentTask>,
    /// Final result (set when ended).
    pub result: Option<String>,
    /// Final status (set when ended).
    pub status: Option<String>,
    /// `configurationChange.values.image` of the trigger.
    pub image: Option<String>,
    /// Latest event of this execution.
    pub latest_event: Option<EventRef>,
    /// Latest event with result fail or status errored.
    pub latest_failed_event: Option<EventRef>,
    /// Latest `evaluation.finished`.
    pub latest_evaluation: Option<EvaluationRef>,
}

/// The executions of one lane that have not ended, in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LaneState {
    /// Queued and active executions.
    pub executions: Vec<Execution>,
    /// Ids of causes not redelivered by any queue (ticks, control requests)
    /// whose committed effects are not yet known to be published: a sweep
    /// publishes them again (a transactional outbox in the lane itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unpublished: Vec<String>,
    /// Random id given when the lane is created: ids derived from the lane's
    /// version stay unique when a project is deleted and created again.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub incarnation: String,
}

/// What a sequence trigger resolves to in the shipyard.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerSpec {
    /// Tasks to run.
    pub tasks: Vec<Task>,
    /// Follow-ups of this sequence's `.finished`.
    pub follow_ups: Vec<FollowUp>,
    /// Configuration version to stamp.
    pub gitcommitid: Option<String>,
}

/// Resolves `<stage>.<sequence>` in a shipyard (spec §2.2 step 2).
pub fn trigger_spec(
    shipyard: &Shipyard,
    stage: &str,
    sequence: &str,
    gitcommitid: Option<String>,
) -> Result<TriggerSpec, String> {
    let seq = shipyard.find_sequence(stage, sequence)?;
    Ok(TriggerSpec {
        tasks: seq.tasks,
        follow_ups: shipyard.follow_ups(stage, sequence),
        gitcommitid,
    })
}

/// A user's control request (spec §2.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlAction {
    /// Pause.
    Pause,
    /// Resume.
    Resume,
    /// Abort.
    Abort,
}

/// One input to a lane.
#[derive(Debug, Clone)]
pub enum Input<'a> {
    /// `<stage>.<sequence>.triggered`, with its resolution in the shipyard.
    Trigger {
        /// The event.
        event: &'a KeptnEvent,
        /// Resolution or the error message for the `.finished`.
        spec: Result<TriggerSpec, String>,
        /// The context is paused (for this stage).
        paused: bool,
    },
    /// A task `.started` / `.finished`.
    TaskEvent(&'a KeptnEvent),
    /// Pause / resume / abort the executions of a context in this lane.
    Control {
        /// shkeptncontext.
        keptn_context: &'a str,
        /// Action.
        action: ControlAction,
    },
    /// Time passed: release due tasks, apply timeouts.
    Tick,
}

/// What [`handle`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The lane's new state.
    pub lane: LaneState,
    /// Executions that ended in this step (removed from the lane).
    pub ended: Vec<Execution>,
    /// Events to publish, in order.
    pub emit: Vec<KeptnEvent>,
    /// Whether anything changed (no write is needed otherwise).
    pub changed: bool,
}

struct Step<'c> {
    now: Timestamp,
    cfg: &'c Config,
    emit: Vec<KeptnEvent>,
    ended: Vec<Execution>,
    changed: bool,
}

/// Applies one input to a lane.
pub fn handle(lane: &LaneState, input: Input<'_>, now: Timestamp, cfg: &Config) -> Decision {
    let mut lane = lane.clone();
    let mut st = Step {
        now,
        cfg,
        emit: Vec::new(),
        ended: Vec::new(),
        changed: false,
    };
    match input {
        Input::Trigger {
            event,
            spec,
            paused,
        } => on_trigger(&mut lane, &mut st, event, spec, paused),
        Input::TaskEvent(event) => on_task_event(&mut lane, &mut st, event),
        Input::Control {
            keptn_context,
            action,
        } => on_control(&mut lane, &mut st, keptn_context, action),
        Input::Tick => on_tick(&mut lane, &mut st),
    }
    Decision {
        lane,
        ended: st.ended,
        emit: st.emit,
        changed: st.changed,
    }
}

fn on_trigger(
    lane: &mut LaneState,
    st: &mut Step<'_>,
    ev: &KeptnEvent,
    spec: Result<TriggerSpec, String>,
    paused: bool,
) {
    let EventType::Sequence {
        stage, sequence, ..
    } = ev.event_type()
    else {
        return;
    };
    if lane.executions.iter().any(|e| e.id == ev.id) {
        return; // Keptn rejects a second execution with the same trigger id (§2.2-4).
    }
    let spec = match spec {
        Ok(s) => s,
        Err(message) => {
            let mut data = common_data(&ev.data, ev.project(), Some(&stage), ev.service());
            data.insert("result".into(), json!("fail"));
            data.insert("status".into(), json!("errored"));
            data.insert("message".into(), json!(message));
            let mut fin = KeptnEvent::new(
                ids::derive(&ev.id, "finished"),
                SOURCE,
                sequence_type(&stage, &sequence, "finished"),
                &ev.shkeptncontext,
                Value::Object(data),
                st.now,
            );
            fin.triggeredid = Some(ev.id.clone());
            fin.gitcommitid = ev.gitcommitid.clone();
            st.emit.push(fin);
            st.changed = true;
            return;
        }
    };
    let image = ev
        .data
        .pointer("/configurationChange/values/image")
        .and_then(Value::as_str)
        .map(str::to_string);
    let exec = Execution {
        id: ev.id.clone(),
        keptn_context: ev.shkeptncontext.clone(),
        project: ev.project().unwrap_or_default().into(),
        stage: stage.clone(),
        service: ev.service().unwrap_or_default().into(),
        sequence,
        tasks: spec.tasks,
        follow_ups: spec.follow_ups,
        gitcommitid: spec.gitcommitid,
        input: ev.data.clone(),
        state: ExecState::Triggered,
        paused,
        waiting: false,
        triggered_at: st.now,
        started_at: None,
        finished_at: None,
        previous_tasks: vec![],
        current: None,
        result: None,
        status: None,
        image,
        latest_event: Some(EventRef {
            ty: ev.ty.clone(),
            id: ev.id.clone(),
            time: ev.time,
        }),
        latest_failed_event: None,
        latest_evaluation: None,
    };
    lane.executions.push(exec);
    st.changed = true;
    dispatch(lane, st);
}

/// Starts the oldest queued execution when nothing in the lane is active.
/// Unlike Keptn (quirk 2.11-c), an execution waiting for approval or paused in
/// the middle of a task holds the lane too: nothing overtakes a started sequence.
/// A paused, never-started execution is skipped so it does not block the queue.
fn dispatch(lane: &mut LaneState, st: &mut Step<'_>) {
    loop {
        if lane.executions.iter().any(|e| e.state.is_active()) {
            for e in lane.executions.iter_mut() {
                if e.state == ExecState::Triggered && !e.waiting {
                    e.waiting = true;
                    st.changed = true;
                }
            }
            return;
        }
        let Some(idx) = lane
            .executions
            .iter()
            .position(|e| e.state == ExecState::Triggered && !e.paused)
        else {
            return;
        };
        let exec = &mut lane.executions[idx];
        exec.state = ExecState::Started;
        exec.waiting = false;
        exec.started_at = Some(st.now);
        st.changed = true;
        if proceed(exec, st) {
            let done = lane.executions.remove(idx);
            st.ended.push(done);
        }
    }
}

/// Moves an execution to its next task; returns true when it ended.
fn proceed(exec: &mut Execution, st: &mut Step<'_>) -> bool {
    let stopped = exec
        .previous_tasks
        .last()
        .is_some_and(|t| t.result == "fail" || t.status == "errored");
    let next = exec.previous_tasks.len();
    if stopped || next >= exec.tasks.len() {
        complete(exec, st, End::Normal);
        return true;
    }
    let task = exec.tasks[next].clone();
    let data = task_payload(exec, &task);
    let mut ev = KeptnEvent::new(
        ids::derive(&exec.id, &format!("task/{next}")),
        SOURCE,
        task_type(&task.name, "triggered"),
        &exec.keptn_context,
        data,
        st.now,
    );
    ev.gitcommitid = exec.gitcommitid.clone();
    exec.current = Some(CurrentTask {
        name: task.name.clone(),
        index: next,
        event: ev,
        due_at: st
            .now
            .plus(time::Duration::milliseconds(task.triggered_after_ms())),
        emitted_at: None,
        started: vec![],
        finished: vec![],
    });
    exec.state = if task.name == "approval" {
        ExecState::WaitingForApproval
    } else {
        ExecState::Started
    };
    st.changed = true;
    release_if_due(exec, st);
    false
}

/// Sends the current task's `.triggered` once it is due and the execution is not paused.
fn release_if_due(exec: &mut Execution, st: &mut Step<'_>) {
    if exec.paused {
        return;
    }
    let now = st.now;
    if let Some(cur) = exec.current.as_mut() {
        if cur.emitted_at.is_none() && cur.due_at <= now {
            cur.emitted_at = Some(now);
            cur.event.time = now;
            exec.latest_event = Some(EventRef {
                ty: cur.event.ty.clone(),
                id: cur.event.id.clone(),
                time: now,
            });
            st.emit.push(cur.event.clone());
            st.changed = true;
        }
    }
}

/// The payload of the next task's `.triggered` (spec §2.4).
fn task_payload(exec: &Execution, task: &Task) -> Value {
    let mut data = match &exec.input {
        Value::Object(_) => exec.input.clone(),
        _ => Value::Object(Map::new()),
    };
    merge_previous(&mut data, exec);
    let props = task.properties.clone().unwrap_or_else(|| json!({}));
    let props = if props.is_null() { json!({}) } else { props };
    let mut layer = Map::new();
    layer.insert(task.name.clone(), props);
    merge_into(&mut data, &Value::Object(layer));
    data
}

/// Input data, scope, merged task properties and the last task's result/status;
/// a `message` is blanked (Keptn's rule).
fn merge_previous(data: &mut Value, exec: &Execution) {
    for t in &exec.previous_tasks {
        merge_into(data, &t.properties);
    }
    if let Some(obj) = data.as_object_mut() {
        obj.insert("project".into(), json!(exec.project));
        obj.insert("stage".into(), json!(exec.stage));
        obj.insert("service".into(), json!(exec.service));
        if let Some(last) = exec.previous_tasks.last() {
            obj.insert("result".into(), json!(last.result));
            obj.insert("status".into(), json!(last.status));
        }
        if obj.contains_key("message") {
            obj.insert("message".into(), json!(""));
        }
    }
}

enum End {
    Normal,
    Aborted,
    TimedOut(String),
}

fn complete(exec: &mut Execution, st: &mut Step<'_>, end: End) {
    let last = exec.previous_tasks.last();
    let (result, status, message, state) = match &end {
        End::Normal => (
            last.map_or("pass".to_string(), |t| t.result.clone()),
            last.map_or("succeeded".to_string(), |t| t.status.clone()),
            last.map(|t| t.message.clone()).unwrap_or_default(),
            ExecState::Finished,
        ),
        End::Aborted => (
            "pass".into(),
            "aborted".into(),
            "sequence aborted".into(),
            ExecState::Aborted,
        ),
        End::TimedOut(m) => (
            "fail".into(),
            "errored".into(),
            m.clone(),
            ExecState::TimedOut,
        ),
    };
    let mut data = common_data(
        &exec.input,
        Some(&exec.project),
        Some(&exec.stage),
        Some(&exec.service),
    );
    data.insert("result".into(), json!(result));
    data.insert("status".into(), json!(status));
    if !message.is_empty() {
        data.insert("message".into(), json!(message));
    }
    let mut fin = KeptnEvent::new(
        ids::derive(&exec.id, "finished"),
        SOURCE,
        sequence_type(&exec.stage, &exec.sequence, "finished"),
        &exec.keptn_context,
        Value::Object(data),
        st.now,
    );
    fin.triggeredid = Some(exec.id.clone());
    fin.gitcommitid = exec.gitcommitid.clone();
    exec.latest_event = Some(EventRef {
        ty: fin.ty.clone(),
        id: fin.id.clone(),
        time: st.now,
    });
    if result == "fail" || status == "errored" {
        exec.latest_failed_event = exec.latest_event.clone();
    }
    st.emit.push(fin);
    exec.state = state;
    exec.current = None;
    exec.waiting = false;
    exec.finished_at = Some(st.now);
    exec.result = Some(result.clone());
    exec.status = Some(status);
    st.changed = true;
    if !matches!(end, End::Normal) {
        return; // Keptn: a timed-out or aborted sequence triggers nothing (quirk 2.11-f, kept).
    }
    let last_task = exec.previous_tasks.last().map(|t| t.name.clone());
    let mut payload = match &exec.input {
        Value::Object(_) => exec.input.clone(),
        _ => json!({}),
    };
    merge_previous(&mut payload, exec);
    // The next stages are triggered after this one finished, and their times
    // say so: with equal times, a store that orders by time (Keptn's
    // datastore, ours on DynamoDB, whose queue delivers in any order) could
    // list the next stage's trigger before this stage's `.finished`.
    let follow_up_time = st.now.plus(time::Duration::milliseconds(1));
    for fu in &exec.follow_ups {
        if !fu.fires(&result, last_task.as_deref()) {
            continue;
        }
        let mut data = payload.clone();
        if let Some(o) = data.as_object_mut() {
            o.insert("stage".into(), json!(fu.stage));
        }
        let ev = KeptnEvent::new(
            ids::derive(&exec.id, &format!("followup/{}/{}", fu.stage, fu.sequence)),
            SOURCE,
            sequence_type(&fu.stage, &fu.sequence, "triggered"),
            &exec.keptn_context,
            data,
            follow_up_time,
        );
        st.emit.push(ev);
    }
}

fn common_data(
    input: &Value,
    project: Option<&str>,
    stage: Option<&str>,
    service: Option<&str>,
) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in [("project", project), ("stage", stage), ("service", service)] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    if let Some(labels) = input.get("labels").filter(|l| l.is_object()) {
        m.insert("labels".into(), labels.clone());
    }
    m
}

fn on_task_event(lane: &mut LaneState, st: &mut Step<'_>, ev: &KeptnEvent) {
    let EventType::Task { kind, .. } = ev.event_type() else {
        return;
    };
    if kind != Kind::Started && kind != Kind::Finished {
        return; // .status.changed and others are ignored, as in Keptn.
    }
    let Some(tid) = ev.triggeredid.as_deref() else {
        return;
    };
    let Some(idx) = lane.executions.iter().position(|e| {
        e.keptn_context == ev.shkeptncontext
            && e.current
                .as_ref()
                .is_some_and(|c| c.event.id == tid && c.emitted_at.is_some())
    }) else {
        return; // "sequence not found": not an open task of this lane.
    };
    let exec = &mut lane.executions[idx];
    let cur = exec.current.as_mut().unwrap_or_else(|| unreachable!());
    if cur
        .started
        .iter()
        .chain(cur.finished.iter())
        .any(|r| r.id == ev.id)
    {
        return; // Redelivered event (quirk 2.11-d, fixed): applied once only.
    }
    let rec = TaskEventRecord {
        id: ev.id.clone(),
        source: ev.source.clone(),
        time: ev.time,
        data: if kind == Kind::Finished {
            ev.data.clone()
        } else {
            Value::Null
        },
    };
    let eref = EventRef {
        ty: ev.ty.clone(),
        id: ev.id.clone(),
        time: ev.time,
    };
    exec.latest_event = Some(eref.clone());
    st.changed = true;
    if kind == Kind::Started {
        cur.started.push(rec);
    } else {
        record_finished(exec, rec, eref, ev);
    }
    let cur = exec.current.as_ref().unwrap_or_else(|| unreachable!());
    if !cur.is_done() {
        return;
    }
    let cur = exec.current.take().unwrap_or_else(|| unreachable!());
    exec.previous_tasks.push(aggregate(&cur));
    if proceed(exec, st) {
        let done = lane.executions.remove(idx);
        st.ended.push(done);
        dispatch(lane, st);
    }
}

fn record_finished(exec: &mut Execution, rec: TaskEventRecord, eref: EventRef, ev: &KeptnEvent) {
    if ev.data_str("result").is_some_and(|r| r == "fail")
        || ev.data_str("status").is_some_and(|s| s == "errored")
    {
        exec.latest_failed_event = Some(eref);
    }
    let Some(cur) = exec.current.as_mut() else {
        return;
    };
    if cur.name == "evaluation" {
        if let Some(r) = ev
            .data
            .pointer("/evaluation/result")
            .and_then(Value::as_str)
            .or(ev.data_str("result"))
        {
            let score = ev
                .data
                .pointer("/evaluation/score")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            exec.latest_evaluation = Some(EvaluationRef {
                result: r.into(),
                score,
            });
        }
    }
    cur.finished.push(rec);
}

/// Aggregates the `.finished` events of a task (spec §2.3).
pub fn aggregate(cur: &CurrentTask) -> TaskResult {
    let results: Vec<&str> = cur
        .finished
        .iter()
        .map(|r| r.data.get("result").and_then(Value::as_str).unwrap_or(""))
        .collect();
    let statuses: Vec<&str> = cur
        .finished
        .iter()
        .map(|r| r.data.get("status").and_then(Value::as_str).unwrap_or(""))
        .collect();
    let mut result = if results.iter().any(|r| *r != "pass" && *r != "warning") {
        "fail"
    } else if results.contains(&"warning") {
        "warning"
    } else {
        "pass"
    };
    let status = if statuses.contains(&"errored") {
        "errored"
    } else if statuses.contains(&"aborted") {
        "aborted"
    } else if statuses.iter().all(|s| *s == "succeeded") {
        "succeeded"
    } else {
        result = "fail";
        "unknown"
    };
    let mut properties = json!({});
    for r in &cur.finished {
        merge_into(&mut properties, &r.data);
    }
    let message = cur
        .finished
        .iter()
        .rev()
        .find_map(|r| r.data.get("message").and_then(Value::as_str))
        .unwrap_or("")
        .to_string();
    TaskResult {
        name: cur.name.clone(),
        triggered_id: cur.event.id.clone(),
        result: result.into(),
        status: status.into(),
        message,
        properties,
    }
}

fn on_control(lane: &mut LaneState, st: &mut Step<'_>, ctx: &str, action: ControlAction) {
    match action {
        ControlAction::Pause => {
            for e in lane
                .executions
                .iter_mut()
                .filter(|e| e.keptn_context == ctx)
            {
                if !e.paused {
                    e.paused = true;
                    st.changed = true;
                }
            }
        }
        ControlAction::Resume => {
            for e in lane
                .executions
                .iter_mut()
                .filter(|e| e.keptn_context == ctx)
            {
                if e.paused {
                    e.paused = false;
                    st.changed = true;
                    release_if_due(e, st);
                }
            }
            dispatch(lane, st);
        }
        ControlAction::Abort => {
            let mut i = 0;
            while i < lane.executions.len() {
                if lane.executions[i].keptn_context == ctx {
                    let mut e = lane.executions.remove(i);
                    complete(&mut e, st, End::Aborted);
                    st.ended.push(e);
                } else {
                    i += 1;
                }
            }
            dispatch(lane, st);
        }
    }
}

fn on_tick(lane: &mut LaneState, st: &mut Step<'_>) {
    let mut i = 0;
    while i < lane.executions.len() {
        let exec = &mut lane.executions[i];
        release_if_due(exec, st);
        if let Some(msg) = timeout_reason(exec, st.now, st.cfg) {
            let mut e = lane.executions.remove(i);
            complete(&mut e, st, End::TimedOut(msg));
            st.ended.push(e);
            continue;
        }
        i += 1;
    }
    dispatch(lane, st);
}

fn timeout_reason(exec: &Execution, now: Timestamp, cfg: &Config) -> Option<String> {
    let cur = exec.current.as_ref()?;
    let sent = cur.emitted_at?;
    if cur.started.is_empty() && cur.finished.is_empty() {
        if now.millis() >= sent.millis() + cfg.task_started_timeout_ms {
            return Some(format!(
                "sequence timed out while waiting for task {} to receive a correlating .started or .finished event",
                cur.name
            ));
        }
        return None;
    }
    let limit = cfg.task_finished_timeout_ms?;
    if cur.name != "approval" && !cur.is_done() && now.millis() >= sent.millis() + limit {
        return Some(format!(
            "sequence timed out while waiting for task {} to finish ({} ms task-finished timeout)",
            cur.name, limit
        ));
    }
    None
}

/// When the lane next needs a [`Input::Tick`].
pub fn next_wakeup(lane: &LaneState, cfg: &Config) -> Option<Timestamp> {
    lane.executions
        .iter()
        .filter(|e| e.state.is_active() && !e.paused)
        .filter_map(|e| {
            let cur = e.current.as_ref()?;
            let Some(sent) = cur.emitted_at else {
                return Some(cur.due_at);
            };
            if cur.started.is_empty() && cur.finished.is_empty() {
                return Some(Timestamp::from_millis(
                    sent.millis() + cfg.task_started_timeout_ms,
                ));
            }
            let limit = cfg.task_finished_timeout_ms?;
            (cur.name != "approval" && !cur.is_done())
                .then(|| Timestamp::from_millis(sent.millis() + limit))
        })
        .min()
}

/// Open task `.triggered` events of a lane: sent, task not complete (for
/// `GET /v1/event/triggered/{type}`, the remote execution plane's polling endpoint).
pub fn open_triggers(lane: &LaneState) -> Vec<&KeptnEvent> {
    lane.executions
        .iter()
        .filter(|e| e.state.is_active())
        .filter_map(|e| e.current.as_ref())
        .filter(|c| c.emitted_at.is_some())
        .map(|c| &c.event)
        .collect()
}

#[cfg(test)]
#[path = "sequence_tests.rs"]
mod tests;
