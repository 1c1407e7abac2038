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

impl Config {
    /// Retention from `KEELSON_RETENTION` (a Go duration; unset or empty keeps everything).
    pub fn from_env() -> Result<Config, String> {
        let retention_ms = match std::env::var("KEELSON_RETENTION") {
            Ok(v) if !v.trim().is_empty() => Some(
                keelson_core::shipyard::parse_go_duration(v.trim())
                    .map_err(|e| format!("KEELSON_RETENTION: {e}"))?,
            ),
            _ => None,
        };
        Ok(Config { retention_ms })
    }
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

/// Applies the retention every `every`, for as long as the task runs.
pub async fn retain_forever<S: EventStore, C: Clock>(
    store: S,
    clock: C,
    cfg: Config,
    every: std::time::Duration,
) {
    loop {
        match apply_retention(&store, &clock, &cfg).await {
            Ok(n) if n > 0 => {
                tracing::info!(deleted = n, "events past the retention period deleted")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "applying retention failed"),
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_core::ports::ManualClock;
    use keelson_core::query::EventQuery;
    use keelson_memory::MemoryStore;

    fn ev(id: &str, ms: i64) -> KeptnEvent {
        KeptnEvent::new(
            id.into(),
            "t",
            "sh.keptn.event.test.finished".into(),
            "ctx",
            serde_json::json!({"project": "p"}),
            Timestamp::from_millis(ms),
        )
    }

    #[tokio::test]
    async fn events_are_stored_once_and_retention_deletes_only_expired_ones() {
        let store = MemoryStore::new();
        assert_eq!(
            store_events(&store, &[ev("a", 1_000), ev("b", 50_000)])
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            store_events(&store, &[ev("a", 1_000)]).await.unwrap(),
            0,
            "a redelivered event is stored once"
        );
        let clock = ManualClock::at(Timestamp::from_millis(60_000));
        let keep_all = Config { retention_ms: None };
        assert_eq!(apply_retention(&store, &clock, &keep_all).await.unwrap(), 0);
        let cfg = Config {
            retention_ms: Some(30_000),
        };
        assert_eq!(apply_retention(&store, &clock, &cfg).await.unwrap(), 1);
        let left = store
            .query_events(&EventQuery {
                page_size: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            left.events
                .iter()
                .map(|e| e.id.as_str())
                .collect::<Vec<_>>(),
            vec!["b"]
        );
    }
}
