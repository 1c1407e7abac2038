//! The ports: what the domain needs from the outside world. Adapters
//! (`keelson-memory`, `keelson-sqlite`, later DynamoDB and PostgreSQL)
//! implement them and must pass the shared conformance suite.

use crate::error::ErrorKind;
use crate::event::KeptnEvent;
use crate::project::Project;
use crate::query::{EventPage, EventQuery, TypeQuery};
use crate::resource::{Change, Resource, Scope};
use crate::sequence::{Execution, LaneKey, LaneState};
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use thiserror::Error;

/// Errors of stores and buses.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A conditional write lost against a concurrent writer.
    #[error("version conflict: the item was changed concurrently")]
    Conflict,
    /// The consumer already applied this event.
    #[error("event already applied")]
    AlreadyApplied,
    /// Something with that key exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Something asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The backend failed.
    #[error("store backend failed: {source}")]
    Backend {
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        /// Whether a retry may succeed.
        transient: bool,
    },
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static, transient: bool) -> Self {
        StoreError::Backend {
            source: Box::new(e),
            transient,
        }
    }

    /// The kind shells map from.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Conflict | StoreError::AlreadyApplied | StoreError::AlreadyExists(_) => {
                ErrorKind::Conflict
            }
            StoreError::NotFound(_) => ErrorKind::Invalid,
            StoreError::Backend { transient, .. } => {
                if *transient {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Fatal
                }
            }
        }
    }
}

/// Result alias of the ports.
pub type StoreResult<T> = Result<T, StoreError>;

/// A value with the version its conditional write must name.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// Version (1 after the first write).
    pub version: u64,
    /// The value.
    pub value: T,
}

/// Everything a lane write changes, atomically: the lane (conditional on
/// `expected_version`, 0 = must not exist), the executions that ended, and the
/// consumer's record of having applied `cause_id` with its `effects` (for
/// re-publishing on redelivery). Fails with `Conflict` or `AlreadyApplied`.
#[derive(Debug, Clone)]
pub struct LaneCommit<'a> {
    /// The lane.
    pub key: &'a LaneKey,
    /// Version read (0 = new lane).
    pub expected_version: u64,
    /// New state.
    pub state: &'a LaneState,
    /// Executions that ended.
    pub ended: &'a [Execution],
    /// When the lane next needs a tick.
    pub next_wakeup: Option<Timestamp>,
    /// Consumer name.
    pub consumer: &'a str,
    /// Id of the event (or tick/control request) applied.
    pub cause_id: &'a str,
    /// Events to publish.
    pub effects: &'a [KeptnEvent],
    /// When the cause was applied (applied records are pruned by age).
    pub now: Timestamp,
}

/// Filter of stored executions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutionFilter {
    /// Project (required).
    pub project: String,
    /// Only this context.
    pub keptn_context: Option<String>,
    /// Only this stage.
    pub stage: Option<String>,
    /// Only this service.
    pub service: Option<String>,
    /// Only executions that have not ended.
    pub active_only: bool,
}

/// Filter of open task triggers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenTriggerFilter {
    /// Event type (required).
    pub ty: String,
    /// Project.
    pub project: Option<String>,
    /// Stage.
    pub stage: Option<String>,
    /// Service.
    pub service: Option<String>,
    /// Event id.
    pub event_id: Option<String>,
}

/// A registered integration (uniform registration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Integration {
    /// Id (hash of name, namespace and hostname).
    pub id: String,
    /// Name.
    pub name: String,
    /// Registration body as sent (metadata, subscriptions).
    pub body: Value,
    /// Last registration or ping.
    pub last_seen: Timestamp,
}

/// Event storage (the datastore).
pub trait EventStore: Send + Sync {
    /// Stores events; an id already stored is skipped. Returns how many were new.
    fn insert_events(
        &self,
        events: &[KeptnEvent],
    ) -> impl Future<Output = StoreResult<usize>> + Send;
    /// `GET /event`, newest first.
    fn query_events(&self, q: &EventQuery) -> impl Future<Output = StoreResult<EventPage>> + Send;
    /// `GET /event/type/{type}`, newest first.
    fn query_by_type(
        &self,
        q: &TypeQuery,
    ) -> impl Future<Output = StoreResult<Vec<KeptnEvent>>> + Send;
    /// [`Self::query_by_type`] for callers that keep what they decoded of
    /// (immutable) events: an event whose id `known` accepts comes back as
    /// its id only, so the store need not read or decode it.
    fn query_by_type_skipping(
        &self,
        q: &TypeQuery,
        known: &(dyn Fn(&str) -> bool + Sync),
    ) -> impl Future<Output = StoreResult<Vec<TypeHit>>> + Send {
        async move {
            let events = self.query_by_type(q).await?;
            Ok(events
                .into_iter()
                .map(|e| {
                    if known(&e.id) {
                        TypeHit::Known(e.id)
                    } else {
                        TypeHit::Event(Box::new(e))
                    }
                })
                .collect())
        }
    }
    /// Deletes events older than `before` (retention). Returns how many.
    fn purge_events(&self, before: Timestamp) -> impl Future<Output = StoreResult<u64>> + Send;
}

/// An event of [`EventStore::query_by_type_skipping`].
#[derive(Debug, Clone, PartialEq)]
pub enum TypeHit {
    /// An event the caller knew: its id.
    Known(String),
    /// An event the caller did not know.
    Event(Box<KeptnEvent>),
}

/// Projects.
pub trait ProjectStore: Send + Sync {
    /// Creates a project with its shipyard as the first commit; `AlreadyExists` if taken. Returns the commit id.
    fn create_project(
        &self,
        p: &Project,
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<String>> + Send;
    /// The project.
    fn get_project(
        &self,
        name: &str,
    ) -> impl Future<Output = StoreResult<Option<Versioned<Project>>>> + Send;
    /// All projects by name.
    fn list_projects(&self) -> impl Future<Output = StoreResult<Vec<Project>>> + Send;
    /// Replaces a project if its version is `expected_version`.
    fn update_project(
        &self,
        p: &Project,
        expected_version: u64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Deletes a project with its resources, lanes, executions and events. False if absent.
    fn delete_project(&self, name: &str) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// Versioned resources; every write is a new commit of the project.
pub trait ResourceStore: Send + Sync {
    /// Applies changes in one commit; returns the commit id. `NotFound` if the project is unknown.
    fn write_resources(
        &self,
        project: &str,
        scope: &Scope,
        changes: &[Change],
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<String>> + Send;
    /// A resource at a commit (latest when `None`); `NotFound` for an unknown commit.
    fn read_resource(
        &self,
        project: &str,
        scope: &Scope,
        uri: &str,
        at: Option<&str>,
    ) -> impl Future<Output = StoreResult<Option<Resource>>> + Send;
    /// URIs present at a commit (latest when `None`), sorted, with the commit that last changed each.
    fn list_resources(
        &self,
        project: &str,
        scope: &Scope,
        at: Option<&str>,
    ) -> impl Future<Output = StoreResult<Vec<(String, String)>>> + Send;
    /// The newest commit id of a project.
    fn latest_commit(
        &self,
        project: &str,
    ) -> impl Future<Output = StoreResult<Option<String>>> + Send;
}

/// See [`SequenceStore::applied_or_lane`].
#[derive(Debug, Clone, PartialEq)]
pub enum AppliedOrLane {
    /// The cause was applied before, with these effects.
    Applied(Vec<KeptnEvent>),
    /// Not applied: the lane as it is now (`None` if it was never written).
    Lane(Option<Versioned<LaneState>>),
}

/// Sequence orchestration state.
pub trait SequenceStore: Send + Sync {
    /// A lane's state and version.
    fn load_lane(
        &self,
        key: &LaneKey,
    ) -> impl Future<Output = StoreResult<Option<Versioned<LaneState>>>> + Send;
    /// Atomically writes a [`LaneCommit`].
    fn commit_lane(&self, c: LaneCommit<'_>) -> impl Future<Output = StoreResult<()>> + Send;
    /// Records that `consumer` applied `cause_id` at `now` with `effects` and no state change; false if it already had.
    fn record_applied(
        &self,
        consumer: &str,
        cause_id: &str,
        effects: &[KeptnEvent],
        now: Timestamp,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Effects of `consumer`'s applied records from the last `window_ms` before
    /// its newest one, oldest first. A process that died between a commit and
    /// its publish re-publishes them at start: effects of ticks and control
    /// requests have no redelivery to do it (consumers dedupe the repeats).
    fn recent_effects(
        &self,
        consumer: &str,
        window_ms: i64,
    ) -> impl Future<Output = StoreResult<Vec<KeptnEvent>>> + Send;
    /// Forgets applied records older than `before` (after the dedupe window no
    /// queue can still redeliver their events). Returns how many.
    fn purge_applied(&self, before: Timestamp) -> impl Future<Output = StoreResult<u64>> + Send;
    /// The effects stored when `consumer` applied `cause_id`, if it did.
    fn applied_effects(
        &self,
        consumer: &str,
        cause_id: &str,
    ) -> impl Future<Output = StoreResult<Option<Vec<KeptnEvent>>>> + Send;
    /// What an event's consumer reads first: the effects stored when
    /// `consumer` applied `cause_id`, if it did; else the lane's state and
    /// version. Stores that can read both in one snapshot override this.
    fn applied_or_lane(
        &self,
        consumer: &str,
        cause_id: &str,
        key: &LaneKey,
    ) -> impl Future<Output = StoreResult<AppliedOrLane>> + Send {
        async move {
            if let Some(effects) = self.applied_effects(consumer, cause_id).await? {
                return Ok(AppliedOrLane::Applied(effects));
            }
            Ok(AppliedOrLane::Lane(self.load_lane(key).await?))
        }
    }
    /// Lanes whose next wake-up is at or before `now`.
    fn due_lanes(&self, now: Timestamp) -> impl Future<Output = StoreResult<Vec<LaneKey>>> + Send;
    /// Stored executions, oldest trigger first.
    fn list_executions(
        &self,
        f: &ExecutionFilter,
    ) -> impl Future<Output = StoreResult<Vec<Execution>>> + Send;
    /// Open, sent task triggers, oldest first.
    fn open_triggers(
        &self,
        f: &OpenTriggerFilter,
    ) -> impl Future<Output = StoreResult<Vec<KeptnEvent>>> + Send;
    /// Marks a context (or one of its stages) paused or not, for sequences triggered later.
    fn set_paused(
        &self,
        project: &str,
        keptn_context: &str,
        stage: Option<&str>,
        paused: bool,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Whether the context or this stage of it is paused.
    fn is_paused(
        &self,
        project: &str,
        keptn_context: &str,
        stage: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// Uniform registrations.
pub trait IntegrationStore: Send + Sync {
    /// Creates or replaces; true if it was new.
    fn put_integration(&self, i: &Integration) -> impl Future<Output = StoreResult<bool>> + Send;
    /// One integration.
    fn get_integration(
        &self,
        id: &str,
    ) -> impl Future<Output = StoreResult<Option<Integration>>> + Send;
    /// All integrations by name.
    fn list_integrations(&self) -> impl Future<Output = StoreResult<Vec<Integration>>> + Send;
    /// Deletes; false if absent.
    fn delete_integration(&self, id: &str) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// Everything Keelson stores.
pub trait Store:
    EventStore + ProjectStore + ResourceStore + SequenceStore + IntegrationStore + Clone + 'static
{
}
impl<T> Store for T where
    T: EventStore
        + ProjectStore
        + ResourceStore
        + SequenceStore
        + IntegrationStore
        + Clone
        + 'static
{
}

/// Publishes events to every consumer subscribed to their type.
pub trait EventBus: Send + Sync + Clone + 'static {
    /// Publishes in order; all or nothing.
    fn publish(&self, events: &[KeptnEvent]) -> impl Future<Output = StoreResult<()>> + Send;
}

/// A delivery taken from a consumer's queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Receipt to acknowledge it with.
    pub receipt: u64,
    /// The event.
    pub event: KeptnEvent,
}

/// The receiving side of a durable local bus (one queue per consumer, like SQS).
pub trait Queue: Send + Sync + Clone + 'static {
    /// Up to `max` undelivered events of `consumer`, oldest first.
    fn receive(
        &self,
        consumer: &str,
        max: usize,
    ) -> impl Future<Output = StoreResult<Vec<Delivery>>> + Send;
    /// Removes delivered events.
    fn ack(&self, consumer: &str, receipts: &[u64])
        -> impl Future<Output = StoreResult<()>> + Send;
    /// Makes un-acknowledged deliveries available again (a handler failed transiently);
    /// the next `receive` starts from the oldest released one.
    fn release(
        &self,
        consumer: &str,
        receipts: &[u64],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Moves a poison event to the consumer's dead letters.
    fn dead_letter(
        &self,
        consumer: &str,
        receipt: u64,
        reason: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// The consumer whose events this queue writes to the datastore itself
    /// as they are published (nothing new is queued for it), if any.
    fn stores_events_for(&self) -> Option<&str> {
        None
    }
}

/// A consumer's subscription: NATS-style subject patterns (`*` = one part, `>` = the rest).
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// Consumer name.
    pub consumer: String,
    /// Patterns; an event matching any is delivered.
    pub patterns: Vec<String>,
}

impl Subscription {
    /// A subscription.
    pub fn new(consumer: &str, patterns: &[&str]) -> Self {
        Subscription {
            consumer: consumer.into(),
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// Whether `ty` matches one of the patterns.
    pub fn matches(&self, ty: &str) -> bool {
        self.patterns.iter().any(|p| subject_matches(p, ty))
    }
}

/// NATS subject matching: `*` matches one token, `>` one or more trailing tokens.
///
/// Every published event is matched against every subscription; the
/// patterns in use are nearly all literal or a literal prefix and `>`,
/// which are compared as strings (token by token was 1.7% of a
/// quality-gates run's CPU time).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let literal = |p: &str| !p.contains(['*', '>']);
    if literal(pattern) {
        return pattern == subject;
    }
    if let Some(prefix) = pattern.strip_suffix('>') {
        if (prefix.is_empty() || prefix.ends_with('.')) && literal(prefix) {
            return subject.starts_with(prefix);
        }
    }
    tokens_match(pattern, subject)
}

fn tokens_match(pattern: &str, subject: &str) -> bool {
    let mut s = subject.split('.');
    for p in pattern.split('.') {
        match (p, s.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    s.next().is_none()
}

/// Time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_datetime(time::OffsetDateTime::now_utc())
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock at `t`.
    pub fn at(t: Timestamp) -> Self {
        ManualClock(AtomicI64::new(t.millis()))
    }
    /// Moves it forward.
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_subject_patterns_table() {
        let cases = [
            (
                "sh.keptn.event.>",
                "sh.keptn.event.deployment.triggered",
                true,
            ),
            ("sh.keptn.event.>", "sh.keptn.event", false),
            (
                "sh.keptn.event.*.*.triggered",
                "sh.keptn.event.dev.delivery.triggered",
                true,
            ),
            (
                "sh.keptn.event.*.*.triggered",
                "sh.keptn.event.deployment.triggered",
                false,
            ),
            (
                "sh.keptn.event.*.finished",
                "sh.keptn.event.test.finished",
                true,
            ),
            (
                "sh.keptn.event.*.finished",
                "sh.keptn.event.dev.delivery.finished",
                false,
            ),
            ("a.b", "a.b", true),
            ("a.b", "a.b.c", false),
        ];
        for (p, s, want) in cases {
            assert_eq!(subject_matches(p, s), want, "{p} {s}");
        }
    }

    /// The string comparisons of literal and `prefix.>` patterns agree with
    /// the token-by-token rule, edge cases included (empty tokens, `>` or
    /// `*` inside a token, `>` not last).
    #[test]
    fn string_comparisons_agree_with_token_matching() {
        let parts = ["", "a", "b", "*", ">", "a>", "*b", "sh"];
        let mut strings = vec![String::new()];
        for _ in 0..3 {
            let mut next = vec![];
            for s in &strings {
                for p in parts {
                    next.push(if s.is_empty() {
                        p.to_string()
                    } else {
                        format!("{s}.{p}")
                    });
                }
            }
            strings.extend(next);
        }
        strings.sort();
        strings.dedup();
        assert!(strings.len() > 500, "{}", strings.len());
        let mut checked = 0;
        for p in &strings {
            for s in &strings {
                assert_eq!(subject_matches(p, s), tokens_match(p, s), "{p:?} {s:?}");
                checked += 1;
            }
        }
        assert!(checked > 250_000);
    }
}
