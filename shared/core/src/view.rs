//! The sequence state view of `GET /v1/sequence/{project}` (spec §2.6): one
//! document per shkeptncontext, built from the stored executions.

use crate::sequence::{EvaluationRef, EventRef, ExecState, Execution};
use crate::timestamp::Timestamp;
use serde::Serialize;
use std::collections::BTreeMap;

/// One stage of a sequence state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageState {
    /// Stage name.
    pub name: String,
    /// Deployed image of the trigger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `triggered` while running, then the status of the stage's `.finished`.
    pub state: String,
    /// Latest evaluation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_evaluation: Option<EvaluationRef>,
    /// Latest event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_event: Option<EventRef>,
    /// Latest failed event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_failed_event: Option<EventRef>,
}

/// The state of one shkeptncontext.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SequenceState {
    /// Sequence name (of the first stage's trigger).
    pub name: String,
    /// Service.
    pub service: String,
    /// Project.
    pub project: String,
    /// When it was triggered.
    pub time: Timestamp,
    /// shkeptncontext.
    pub shkeptncontext: String,
    /// `triggered`, `waiting`, `started`, `paused`, `finished`, `aborted` or `timedOut`.
    pub state: String,
    /// Stages in trigger order.
    pub stages: Vec<StageState>,
}

fn stage_state(e: &Execution) -> String {
    if e.paused && !e.state.is_terminal() {
        return "paused".into();
    }
    match e.state {
        ExecState::Triggered | ExecState::Started | ExecState::WaitingForApproval => {
            "triggered".into()
        }
        ExecState::Finished | ExecState::Aborted | ExecState::TimedOut => {
            e.status.clone().unwrap_or_else(|| "unknown".into())
        }
    }
}

fn overall(execs: &[&Execution]) -> String {
    if let Some(a) = execs.iter().find(|e| e.state.is_active()) {
        return if a.paused { "paused" } else { "started" }.into();
    }
    if let Some(q) = execs.iter().find(|e| e.state == ExecState::Triggered) {
        return if q.paused {
            "paused"
        } else if q.waiting {
            "waiting"
        } else {
            "triggered"
        }
        .into();
    }
    match execs.iter().max_by_key(|e| e.finished_at).map(|e| e.state) {
        Some(ExecState::Aborted) => "aborted".into(),
        Some(ExecState::TimedOut) => "timedOut".into(),
        _ => "finished".into(),
    }
}

/// Groups executions (any order) into sequence states, newest first.
pub fn sequence_states(execs: &[Execution]) -> Vec<SequenceState> {
    let mut by_ctx: BTreeMap<&str, Vec<&Execution>> = BTreeMap::new();
    for e in execs {
        by_ctx.entry(e.keptn_context.as_str()).or_default().push(e);
    }
    let mut out: Vec<SequenceState> = by_ctx
        .into_values()
        .map(|mut v| {
            v.sort_by(|a, b| a.triggered_at.cmp(&b.triggered_at).then(a.id.cmp(&b.id)));
            let root = v[0];
            SequenceState {
                name: root.sequence.clone(),
                service: root.service.clone(),
                project: root.project.clone(),
                time: root.triggered_at,
                shkeptncontext: root.keptn_context.clone(),
                state: overall(&v),
                stages: v
                    .iter()
                    .map(|e| StageState {
                        name: e.stage.clone(),
                        image: e.image.clone(),
                        state: stage_state(e),
                        latest_evaluation: e.latest_evaluation.clone(),
                        latest_event: e.latest_event.clone(),
                        latest_failed_event: e.latest_failed_event.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.time
            .cmp(&a.time)
            .then(b.shkeptncontext.cmp(&a.shkeptncontext))
    });
    out
}
