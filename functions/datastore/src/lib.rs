//! The `datastore` function: stores every Keptn event once (idempotent on the
//! event id) and applies the retention period. Queries are served by the API
//! straight from the store.

use keelson_core::event::KeptnEvent;
use keelson_core::ports::{Clock, EventStore, StoreError, Subscription};
use keelson_core::Timestamp;

/// Consumer name.
pub const CONSUMER: &str = "datastore";

/// The events this function consumes: every Keptn event.
pub fn subscription() -> Subscription {
    Subscription::new(CONSUMER, &["sh.keptn.event.>"])
}

/// Datastore settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Events older than this are deleted; `None` keeps everything.
    pub retention_ms: Option<i64>,
}

/// Stores a batch of events; returns how many were new.
pub async fn store_events<S: EventStore>(
    store: &S,
    events: &[KeptnEvent],
) -> Result<usize, StoreError> {
    store.insert_events(events).await
}

/// Deletes events past the retention period; returns how many.
pub async fn apply_retention<S: EventStore, C: Clock>(
    store: &S,
    clock: &C,
    cfg: &Config,
) -> Result<u64, StoreError> {
    match cfg.retention_ms {
        None => Ok(0),
        Some(ms) => {
            let before = Timestamp::from_millis(clock.now().millis().saturating_sub(ms));
            store.purge_events(before).await
        }
    }
}
