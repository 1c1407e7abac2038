//! The `shipyard` function: sequence orchestration (Keptn's shipyard-controller).
//!
//! [`Orchestrator::process`] runs load → [`sequence::handle`] → conditional
//! write → publish for one event, and is safe under at-least-once, unordered
//! delivery: the lane write records the event id with its effects, a conflict
//! re-reads and re-applies, and a redelivered event whose write landed
//! re-publishes the stored effects.

mod error;

pub use error::Error;

use keelson_core::event::{EventType, KeptnEvent, Kind};
use keelson_core::ids;
use keelson_core::ports::{
    AppliedOrLane, Clock, EventBus, ExecutionFilter, LaneCommit, Store, StoreError, Subscription,
};
use keelson_core::resource::{Scope, SHIPYARD_URI};
use keelson_core::sequence::{self, Config, ControlAction, Input, LaneKey, LaneState};
use keelson_core::shipyard::Shipyard;
use keelson_core::Timestamp;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// Consumer name (applied-event records and the bus queue).
pub const CONSUMER: &str = "shipyard";

/// Conflicting writers re-read and re-apply at most this many times.
const MAX_ATTEMPTS: usize = 16;

/// The events this function consumes.
pub fn subscription() -> Subscription {
    Subscription::new(
        CONSUMER,
        &[
            "sh.keptn.event.*.*.triggered",
            "sh.keptn.event.*.started",
            "sh.keptn.event.*.finished",
        ],
    )
}

/// What processing one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// State changed; this many events were published.
    Applied {
        /// Number of events published.
        emitted: usize,
    },
    /// The input had been applied before; its stored effects were re-published.
    AlreadyApplied {
        /// Number of events re-published.
        republished: usize,
    },
    /// Nothing to do (not for this function, or no matching sequence).
    Ignored,
}

/// The orchestrator with its adapters.
pub struct Orchestrator<S, B, C> {
    store: S,
    bus: B,
    clock: C,
    cfg: Config,
    shipyards: Mutex<HashMap<(String, String), Arc<Shipyard>>>,
}

impl<S: Store, B: EventBus, C: Clock> Orchestrator<S, B, C> {
    /// Builds it.
    pub fn new(store: S, bus: B, clock: C, cfg: Config) -> Self {
        Orchestrator {
            store,
            bus,
            clock,
            cfg,
            shipyards: Mutex::new(HashMap::new()),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The bus.
    pub fn bus(&self) -> &B {
        &self.bus
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Processes one event from the bus.
    pub async fn process(&self, ev: &KeptnEvent) -> Result<Outcome, Error> {
        // Decided by the event alone, before any read: only a sequence's
        // `.triggered` and a task's `.started`/`.finished` answering a
        // trigger can change a lane (the sequence's own `.started` and
        // `.finished`, which the shipyard emits, come back here too).
        let is_trigger = match ev.event_type() {
            EventType::Sequence { kind, .. } => {
                if kind != Kind::Triggered {
                    return Ok(Outcome::Ignored);
                }
                true
            }
            EventType::Task { kind, .. } => {
                if kind != Kind::Started && kind != Kind::Finished || ev.triggeredid.is_none() {
                    return Ok(Outcome::Ignored);
                }
                false
            }
            EventType::Other => return Ok(Outcome::Ignored),
        };
        let Some(key) = LaneKey::of_event(ev) else {
            return Ok(Outcome::Ignored);
        };
        let mut first_read = match self.store.applied_or_lane(CONSUMER, &ev.id, &key).await? {
            AppliedOrLane::Applied(effects) => {
                return self.republish_applied(ev, &key, is_trigger, effects).await
            }
            AppliedOrLane::Lane(lane) => Some(lane),
        };
        for _ in 0..MAX_ATTEMPTS {
            let loaded = match first_read.take() {
                Some(lane) => lane,
                None => self.store.load_lane(&key).await?,
            };
            let (version, lane) = match loaded {
                Some(v) => (v.version, v.value),
                None => (
                    0,
                    LaneState {
                        incarnation: ids::random(),
                        ..LaneState::default()
                    },
                ),
            };
            let now = self.clock.now();
            let mut paused_read = None;
            let decision = if is_trigger {
                let spec = self.resolve(ev, &key).await?;
                let paused = self
                    .store
                    .is_paused(&key.project, &ev.shkeptncontext, &key.stage)
                    .await?;
                paused_read = Some(paused);
                sequence::handle(
                    &lane,
                    Input::Trigger {
                        event: ev,
                        spec,
                        paused,
                    },
                    now,
                    &self.cfg,
                )
            } else {
                sequence::handle(&lane, Input::TaskEvent(ev), now, &self.cfg)
            };
            if !decision.changed {
                return Ok(Outcome::Ignored);
            }
            match self.write(&key, version, &lane, &decision, &ev.id).await {
                Ok(()) => {
                    self.bus.publish(&decision.emit).await?;
                    if let Some(paused) = paused_read {
                        self.reconcile_pause(ev, &key, Some(paused)).await?;
                    }
                    return Ok(Outcome::Applied {
                        emitted: decision.emit.len(),
                    });
                }
                Err(StoreError::Conflict) => continue,
                Err(StoreError::AlreadyApplied) => {
                    let effects = self
                        .store
                        .applied_effects(CONSUMER, &ev.id)
                        .await?
                        .unwrap_or_default();
                    return self.republish_applied(ev, &key, is_trigger, effects).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::TooManyConflicts(key.id()))
    }

    async fn write(
        &self,
        key: &LaneKey,
        version: u64,
        before: &LaneState,
        d: &sequence::Decision,
        cause: &str,
    ) -> Result<(), StoreError> {
        if d.lane == *before && d.ended.is_empty() {
            // Effects without a state change (a trigger that cannot start): record them only.
            return if self
                .store
                .record_applied(CONSUMER, cause, &d.emit, self.clock.now())
                .await?
            {
                Ok(())
            } else {
                Err(StoreError::AlreadyApplied)
            };
        }
        self.store
            .commit_lane(LaneCommit {
                key,
                expected_version: version,
                state: &d.lane,
                ended: &d.ended,
                next_wakeup: self.wakeup(&d.lane),
                consumer: CONSUMER,
                cause_id: cause,
                effects: &d.emit,
                now: self.clock.now(),
            })
            .await
    }

    /// When the lane next needs the sweep: at once while effects await publishing.
    fn wakeup(&self, lane: &LaneState) -> Option<Timestamp> {
        if lane.unpublished.is_empty() {
            sequence::next_wakeup(lane, &self.cfg)
        } else {
            Some(Timestamp::from_millis(0))
        }
    }

    /// Publishes the stored effects of the lane's unpublished causes (their
    /// process died between the commit and the publish), then clears them.
    async fn flush_unpublished(&self, key: &LaneKey, causes: &[String]) -> Result<usize, Error> {
        let mut n = 0;
        for cause in causes {
            let effects = self
                .store
                .applied_effects(CONSUMER, cause)
                .await?
                .unwrap_or_default();
            self.publish_with_retry(&effects).await?;
            n += effects.len();
            self.mark_published(key, cause).await?;
        }
        Ok(n)
    }

    /// Removes `cause` from the lane's unpublished causes.
    async fn mark_published(&self, key: &LaneKey, cause: &str) -> Result<(), Error> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(loaded) = self.store.load_lane(key).await? else {
                return Ok(());
            };
            if !loaded.value.unpublished.iter().any(|c| c == cause) {
                return Ok(());
            }
            let mut lane = loaded.value.clone();
            lane.unpublished.retain(|c| c != cause);
            let marker = ids::derive(
                cause,
                &format!("published@{}@{}", loaded.value.incarnation, loaded.version),
            );
            match self
                .store
                .commit_lane(LaneCommit {
                    key,
                    expected_version: loaded.version,
                    state: &lane,
                    ended: &[],
                    next_wakeup: self.wakeup(&lane),
                    consumer: CONSUMER,
                    cause_id: &marker,
                    effects: &[],
                    now: self.clock.now(),
                })
                .await
            {
                Ok(()) | Err(StoreError::AlreadyApplied) => return Ok(()),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::TooManyConflicts(key.id()))
    }

    async fn publish_with_retry(&self, events: &[KeptnEvent]) -> Result<(), Error> {
        // No sleeping here (the core of this function is runtime-free); the
        // store adapters already wait on busy databases.
        let mut attempt = 1;
        loop {
            match self.bus.publish(events).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= 3 => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "publishing committed effects failed; retrying");
                    attempt += 1;
                }
            }
        }
    }

    /// A redelivered event: its effects again, and for a sequence trigger
    /// the pause reconciliation, which the first delivery may not have reached
    /// (it failed after the commit, so the broker or queue redelivered).
    async fn republish_applied(
        &self,
        ev: &KeptnEvent,
        key: &LaneKey,
        is_trigger: bool,
        effects: Vec<KeptnEvent>,
    ) -> Result<Outcome, Error> {
        let outcome = self.republish(effects).await?;
        if is_trigger {
            self.reconcile_pause(ev, key, None).await?;
        }
        Ok(outcome)
    }

    /// A pause or resume may have landed between reading the pause mark
    /// (`paused_read`) and committing a new execution; if the mark changed,
    /// apply it now. One read when nothing changed (the usual case); with
    /// `paused_read` unknown (`None`), the execution itself is compared.
    async fn reconcile_pause(
        &self,
        ev: &KeptnEvent,
        key: &LaneKey,
        paused_read: Option<bool>,
    ) -> Result<(), Error> {
        let paused = self
            .store
            .is_paused(&key.project, &ev.shkeptncontext, &key.stage)
            .await?;
        if paused_read == Some(paused) {
            return Ok(());
        }
        let Some(lane) = self.store.load_lane(key).await? else {
            return Ok(());
        };
        let Some(exec) = lane.value.executions.iter().find(|e| e.id == ev.id) else {
            return Ok(());
        };
        if paused != exec.paused {
            let action = if paused {
                ControlAction::Pause
            } else {
                ControlAction::Resume
            };
            let ctx = ev.shkeptncontext.as_str();
            self.apply_to_lane(
                key,
                |_| Input::Control {
                    keptn_context: ctx,
                    action,
                },
                &ids::derive(&ev.id, "pause-reconcile"),
            )
            .await?;
        }
        Ok(())
    }

    async fn republish(&self, effects: Vec<keelson_core::KeptnEvent>) -> Result<Outcome, Error> {
        self.bus.publish(&effects).await?;
        Ok(Outcome::AlreadyApplied {
            republished: effects.len(),
        })
    }

    /// Resolves a trigger in the shipyard at the trigger's commit (or the latest).
    async fn resolve(
        &self,
        ev: &KeptnEvent,
        key: &LaneKey,
    ) -> Result<Result<sequence::TriggerSpec, String>, Error> {
        let EventType::Sequence {
            stage, sequence, ..
        } = ev.event_type()
        else {
            return Ok(Err("not a sequence trigger".into()));
        };
        let Some(project) = self.store.get_project(&key.project).await? else {
            return Ok(Err(format!(
                "Unable to retrieve Shipyard file: project {} does not exist",
                key.project
            )));
        };
        if project.value.service(&key.service).is_none() {
            return Ok(Err(format!(
                "Unable to start sequence {sequence}: service {} does not exist in project {}",
                key.service, key.project
            )));
        }
        let commit = match &ev.gitcommitid {
            Some(c) => c.clone(),
            None => match self.store.latest_commit(&key.project).await? {
                Some(c) => c,
                None => {
                    return Ok(Err(
                        "Unable to retrieve Shipyard file: the project has no configuration".into(),
                    ))
                }
            },
        };
        let shipyard = match self.shipyard_at(&key.project, &commit).await? {
            Ok(s) => s,
            Err(msg) => return Ok(Err(format!("Unable to retrieve Shipyard file: {msg}"))),
        };
        Ok(sequence::trigger_spec(
            &shipyard,
            &stage,
            &sequence,
            Some(commit),
        ))
    }

    async fn shipyard_at(
        &self,
        project: &str,
        commit: &str,
    ) -> Result<Result<Arc<Shipyard>, String>, Error> {
        let k = (project.to_string(), commit.to_string());
        if let Some(s) = self.cache().get(&k) {
            return Ok(Ok(s.clone()));
        }
        let res = match self
            .store
            .read_resource(project, &Scope::project(), SHIPYARD_URI, Some(commit))
            .await
        {
            Ok(r) => r,
            Err(StoreError::NotFound(what)) => return Ok(Err(format!("{what} not found"))),
            Err(e) => return Err(e.into()),
        };
        let Some(res) = res else {
            return Ok(Err(format!("{SHIPYARD_URI} not found at version {commit}")));
        };
        let text = String::from_utf8_lossy(&res.content);
        match Shipyard::parse(&text) {
            Ok(s) => {
                let s = Arc::new(s);
                let mut cache = self.cache();
                if cache.len() > 256 {
                    cache.clear();
                }
                cache.insert(k, s.clone());
                Ok(Ok(s))
            }
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Shipyard>>> {
        self.shipyards.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// At start: re-publishes the effects committed in the last `window_ms`
    /// before the newest one, in case the previous process died between a
    /// commit and its publish (ticks and control requests are not redelivered).
    /// Consumers dedupe the repeats. Returns how many events were published.
    pub async fn republish_recent(&self, window_ms: i64) -> Result<usize, Error> {
        let effects = self.store.recent_effects(CONSUMER, window_ms).await?;
        self.bus.publish(&effects).await?;
        Ok(effects.len())
    }

    /// Releases due tasks and applies timeouts in every lane that is due. Returns events emitted.
    pub async fn tick(&self) -> Result<usize, Error> {
        let now = self.clock.now();
        let mut emitted = 0;
        let mut first_error = None;
        for key in self.store.due_lanes(now).await? {
            // One failing lane must not starve the lanes after it.
            match self.apply_to_lane(&key, |_| Input::Tick, "tick").await {
                Ok(n) => emitted += n,
                Err(e) => {
                    tracing::warn!(lane = %key.id(), error = %e, "tick failed for a lane");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if emitted == 0 => Err(e),
            _ => Ok(emitted),
        }
    }

    /// Pause / resume / abort a context (or one stage of it). Returns events emitted.
    pub async fn control(
        &self,
        project: &str,
        keptn_context: &str,
        action: ControlAction,
        stage: Option<&str>,
    ) -> Result<usize, Error> {
        match action {
            ControlAction::Pause => {
                self.store
                    .set_paused(project, keptn_context, stage, true)
                    .await?
            }
            ControlAction::Resume => {
                self.store
                    .set_paused(project, keptn_context, stage, false)
                    .await?
            }
            // An aborted context must not leave marks that pause a later re-trigger.
            ControlAction::Abort => {
                self.store
                    .set_paused(project, keptn_context, stage, false)
                    .await?
            }
        }
        let execs = self
            .store
            .list_executions(&ExecutionFilter {
                project: project.into(),
                keptn_context: Some(keptn_context.into()),
                stage: stage.map(str::to_string),
                service: None,
                active_only: true,
            })
            .await?;
        let lanes: BTreeSet<LaneKey> = execs
            .iter()
            .map(|e| LaneKey::new(&e.project, &e.stage, &e.service))
            .collect();
        let request = ids::random();
        let mut emitted = 0;
        for key in lanes {
            emitted += self
                .apply_to_lane(
                    &key,
                    |_| Input::Control {
                        keptn_context,
                        action,
                    },
                    &request,
                )
                .await?;
        }
        Ok(emitted)
    }

    /// Applies a stateless input (tick, control) to a lane with conflict retries.
    /// The cause id is derived from the lane and the version read, so a retry of the
    /// same step is recognised as already applied.
    async fn apply_to_lane<'a>(
        &self,
        key: &LaneKey,
        input: impl Fn(&LaneState) -> Input<'a>,
        cause: &str,
    ) -> Result<usize, Error> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(loaded) = self.store.load_lane(key).await? else {
                return Ok(0);
            };
            if !loaded.value.unpublished.is_empty() {
                // A previous tick or control request died before publishing.
                let causes = loaded.value.unpublished.clone();
                let n = self.flush_unpublished(key, &causes).await?;
                tracing::info!(lane = %key.id(), events = n, "re-published effects a stopped process had committed");
                continue;
            }
            let mut d = sequence::handle(
                &loaded.value,
                input(&loaded.value),
                self.clock.now(),
                &self.cfg,
            );
            let cause_id = ids::derive(
                cause,
                &format!(
                    "{}@{}@{}",
                    key.id(),
                    loaded.value.incarnation,
                    loaded.version
                ),
            );
            if !d.changed {
                if matches!(input(&loaded.value), Input::Tick) {
                    // Woken but nothing was due (the timeouts changed since the
                    // wake-up was stored): store the right wake-up, or the lane
                    // would be picked up on every tick.
                    let next = self.wakeup(&loaded.value);
                    match self
                        .store
                        .commit_lane(LaneCommit {
                            key,
                            expected_version: loaded.version,
                            state: &loaded.value,
                            ended: &[],
                            next_wakeup: next,
                            consumer: CONSUMER,
                            cause_id: &cause_id,
                            effects: &[],
                            now: self.clock.now(),
                        })
                        .await
                    {
                        Ok(()) | Err(StoreError::Conflict) | Err(StoreError::AlreadyApplied) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                return Ok(0);
            }
            // Ticks and control requests are not redelivered: their effects
            // are committed as unpublished, and marked published once they
            // are; a sweep publishes them if this process dies in between.
            let outbox = !d.emit.is_empty();
            if outbox {
                d.lane.unpublished.push(cause_id.clone());
            }
            match self
                .write(key, loaded.version, &loaded.value, &d, &cause_id)
                .await
            {
                Ok(()) => {
                    self.publish_with_retry(&d.emit).await?;
                    if outbox {
                        self.mark_published(key, &cause_id).await?;
                    }
                    return Ok(d.emit.len());
                }
                Err(StoreError::Conflict) => continue,
                Err(StoreError::AlreadyApplied) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::TooManyConflicts(key.id()))
    }
}

/// Orchestration timeouts from `KEELSON_TASK_STARTED_TIMEOUT` /
/// `KEELSON_TASK_FINISHED_TIMEOUT` (Go durations such as `10m`); every bad
/// variable is named.
pub fn config_from_env() -> Result<Config, String> {
    let mut cfg = Config::default();
    let mut bad = Vec::new();
    if let Ok(v) = std::env::var("KEELSON_TASK_STARTED_TIMEOUT") {
        match keelson_core::shipyard::parse_go_duration(&v) {
            Ok(ms) => cfg.task_started_timeout_ms = ms,
            Err(e) => bad.push(format!("KEELSON_TASK_STARTED_TIMEOUT: {e}")),
        }
    }
    if let Ok(v) = std::env::var("KEELSON_TASK_FINISHED_TIMEOUT") {
        match keelson_core::shipyard::parse_go_duration(&v) {
            Ok(ms) => cfg.task_finished_timeout_ms = Some(ms),
            Err(e) => bad.push(format!("KEELSON_TASK_FINISHED_TIMEOUT: {e}")),
        }
    }
    if bad.is_empty() {
        Ok(cfg)
    } else {
        Err(bad.join("; "))
    }
}

/// Applied-event records are kept this long: longer than any queue or broker
/// redelivers an event (SQS keeps a message 14 days).
pub const DEDUPE_WINDOW_MS: i64 = 15 * 24 * 3600 * 1000;

/// The periodic sweep of a deployed shipyard: timeouts, `triggeredAfter`
/// and queued dispatch, and forgetting applied-event records past the dedupe
/// window. Returns the number of events emitted.
pub async fn sweep<S: Store, B: EventBus, C: Clock>(
    orch: &Orchestrator<S, B, C>,
    dedupe_window_ms: i64,
) -> Result<usize, Error> {
    let emitted = orch.tick().await?;
    let before =
        Timestamp::from_millis(orch.clock().now().millis().saturating_sub(dedupe_window_ms));
    if let Err(e) = keelson_core::ports::SequenceStore::purge_applied(orch.store(), before).await {
        tracing::warn!(error = %e, "pruning applied-event records failed");
    }
    Ok(emitted)
}

/// Sweeps every `every` (timeouts, `triggeredAfter`, queued dispatch), for as
/// long as the task runs. Several sweepers may run at once: every lane write
/// is conditional.
pub async fn tick_forever<S: Store, B: EventBus, C: Clock>(
    orch: Arc<Orchestrator<S, B, C>>,
    every: std::time::Duration,
) {
    loop {
        if let Err(e) = orch.tick().await {
            tracing::warn!(error = %e, "shipyard sweep failed");
        }
        tokio::time::sleep(every).await;
    }
}

/// Forgets applied-event records older than the dedupe window every `every`.
pub async fn forget_applied_forever<S: Store, C: Clock>(
    store: S,
    clock: C,
    window_ms: i64,
    every: std::time::Duration,
) {
    loop {
        let before = Timestamp::from_millis(clock.now().millis().saturating_sub(window_ms));
        match store.purge_applied(before).await {
            Ok(n) if n > 0 => tracing::info!(
                forgotten = n,
                "applied-event records past the dedupe window removed"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning applied-event records failed"),
        }
        tokio::time::sleep(every).await;
    }
}
