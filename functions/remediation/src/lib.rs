//! The `remediation` function: remediation actions (Keptn's remediation-service,
//! spec §5.2).
//!
//! `get-action.triggered` → `get-action.started` and `get-action.finished`
//! with the next action of the service's `remediation.yaml` (read at the
//! event's commit) for the problem, or the reason there is none
//! ([`keelson_core::remediation`]).
//!
//! Stateless: emitted ids derive from the trigger's.

use keelson_core::event::{task_type, KeptnEvent};
use keelson_core::ports::{Clock, EventBus, ResourceStore, StoreError, Subscription};
use keelson_core::remediation::{self, File, REMEDIATION_URI};
use keelson_core::resource::Scope;
use keelson_core::ErrorKind;

/// Consumer name (its queue on the bus).
pub const CONSUMER: &str = "remediation";

/// The events this function consumes.
pub fn subscription() -> Subscription {
    Subscription::new(CONSUMER, &["sh.keptn.event.get-action.triggered"])
}

/// What can go wrong while processing an event.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store or the bus failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event cannot be processed as sent.
    #[error("invalid event: {0}")]
    Invalid(String),
}

impl Error {
    /// The kind shells map from.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store(e) => e.kind(),
            Error::Invalid(_) => ErrorKind::Invalid,
        }
    }
}

/// What processing one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The answer was sent with this result (`pass`: an action; `fail`: none).
    Answered(String),
    /// Not for this function.
    Ignored,
}

/// The remediation function with its adapters.
pub struct Remediation<S, B, C> {
    store: S,
    bus: B,
    clock: C,
}

impl<S: ResourceStore, B: EventBus, C: Clock> Remediation<S, B, C> {
    /// Builds it.
    pub fn new(store: S, bus: B, clock: C) -> Self {
        Remediation { store, bus, clock }
    }

    /// Processes one event from the bus.
    pub async fn process(&self, ev: &KeptnEvent) -> Result<Outcome, Error> {
        if ev.ty != task_type("get-action", "triggered") {
            return Ok(Outcome::Ignored);
        }
        let (Some(project), Some(stage)) = (ev.project(), ev.stage()) else {
            return Err(Error::Invalid(
                "get-action.triggered needs data.project and data.stage".into(),
            ));
        };
        // Service level; stage level for a problem without a service (as Keptn).
        let scope = Scope {
            stage: Some(stage.into()),
            service: ev.service().map(str::to_string),
        };
        let at = ev.gitcommitid.as_deref().filter(|c| !c.is_empty());
        let content = match self
            .store
            .read_resource(project, &scope, REMEDIATION_URI, at)
            .await
        {
            Ok(r) => r.map(|r| r.content),
            Err(e) if e.kind() == ErrorKind::Transient => return Err(e.into()),
            Err(e) => {
                tracing::info!(error = %e, project, stage, "remediation.yaml unreadable");
                None
            }
        };
        let text = content.as_deref().and_then(|b| std::str::from_utf8(b).ok());
        let file = text.map_or(File::Missing, File::Text);
        let (started, finished) = remediation::on_get_action(ev, file, self.clock.now());
        let result = finished.data_str("result").unwrap_or_default().to_string();
        self.bus.publish(&[started, finished]).await?;
        Ok(Outcome::Answered(result))
    }
}
