//! The `approval` function: approval tasks (Keptn's approval-service, spec §5.1).
//!
//! `approval.triggered` → `approval.started`, and `approval.finished` when the
//! approval decides by itself ([`keelson_core::approval`]). An approval has one
//! answer: the automatic one is recorded in the store's ledger under the
//! trigger's id before it is sent, as the API records a person's answer, so
//! whichever comes first answers and the other is refused (or dropped).
//!
//! Stateless: emitted ids derive from the trigger's, and a redelivered
//! trigger re-sends the answer it recorded.

use keelson_core::approval::{self, answer_ledger_key};
use keelson_core::event::{task_type, KeptnEvent};
use keelson_core::ports::{Clock, EventBus, SequenceStore, StoreError, Subscription};
use keelson_core::ErrorKind;

pub use approval::CONSUMER;

/// The events this function consumes.
pub fn subscription() -> Subscription {
    Subscription::new(CONSUMER, &["sh.keptn.event.approval.triggered"])
}

/// What can go wrong while processing an event.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store or the bus failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// The kind shells map from.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store(e) => e.kind(),
        }
    }
}

/// What processing one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `approval.started` was sent; a person decides.
    Waiting,
    /// `approval.started` and the automatic `approval.finished` (this result) were sent.
    Decided(String),
    /// `approval.started` was sent; the approval had been answered already (by a person).
    AnsweredBefore,
    /// Not for this function.
    Ignored,
}

/// The approval function with its adapters.
pub struct Approval<S, B, C> {
    store: S,
    bus: B,
    clock: C,
}

impl<S: SequenceStore, B: EventBus, C: Clock> Approval<S, B, C> {
    /// Builds it.
    pub fn new(store: S, bus: B, clock: C) -> Self {
        Approval { store, bus, clock }
    }

    /// Processes one event from the bus.
    pub async fn process(&self, ev: &KeptnEvent) -> Result<Outcome, Error> {
        if ev.ty != task_type("approval", "triggered") {
            return Ok(Outcome::Ignored);
        }
        let now = self.clock.now();
        let (started, automatic) = approval::on_triggered(ev, now);
        let key = answer_ledger_key(&ev.id);
        let Some(finished) = automatic else {
            self.bus.publish(&[started]).await?;
            return Ok(Outcome::Waiting);
        };
        let recorded = self
            .store
            .record_applied(CONSUMER, &key, std::slice::from_ref(&finished), now)
            .await?;
        let answer = if recorded {
            Some(finished)
        } else {
            // Answered before: by this function (a redelivery: send the same
            // answer again, consumers dedupe it) or by a person (send nothing).
            self.store
                .applied_effects(CONSUMER, &key)
                .await?
                .unwrap_or_default()
                .into_iter()
                .find(|e| e.source == approval::SOURCE)
        };
        match answer {
            Some(f) => {
                let result = f.data_str("result").unwrap_or_default().to_string();
                self.bus.publish(&[started, f]).await?;
                Ok(Outcome::Decided(result))
            }
            None => {
                self.bus.publish(&[started]).await?;
                Ok(Outcome::AnsweredBefore)
            }
        }
    }
}
