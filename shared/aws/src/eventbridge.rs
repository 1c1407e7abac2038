//! The EventBridge bus: each CloudEvent is one `PutEvents` entry with the
//! event as `detail`, its type as `detail-type` and `keelson` as `source`.

use crate::error::{fatal, store_error};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{EventBus, StoreError, StoreResult};
use std::sync::Arc;
use std::time::Duration;

/// The `source` of every entry Keelson puts (rules match on it).
pub const SOURCE: &str = "keelson";
/// EventBridge takes at most this many entries per `PutEvents`.
pub const MAX_BATCH: usize = 10;
/// EventBridge's limit on a whole `PutEvents` request (and on one entry).
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// The largest entry Keelson puts: EventBridge takes 256 KiB, but the SQS
/// targets receive the entry inside EventBridge's envelope (id, account, time,
/// region, resources: a few hundred bytes) and take at most 256 KiB too.
pub const MAX_ENTRY_BYTES: usize = MAX_REQUEST_BYTES - 2 * 1024;
/// Entries that failed with a retryable code are re-put this many times.
const MAX_ATTEMPTS: u32 = 6;

/// The bus.
#[derive(Clone)]
pub struct EventBridgeBus {
    client: Client,
    bus: Arc<str>,
}

impl EventBridgeBus {
    /// The bus named `bus`.
    pub fn new(client: Client, bus: &str) -> Self {
        EventBridgeBus {
            client,
            bus: bus.into(),
        }
    }
}

/// The size EventBridge counts for an entry: source, detail-type and detail
/// as UTF-8 (no time or resources are set).
pub fn entry_size(ev: &KeptnEvent, detail: &str) -> usize {
    SOURCE.len() + ev.ty.len() + detail.len()
}

/// Builds the entries, refusing one over the size limit with a clear error.
fn entries(bus: &str, events: &[KeptnEvent]) -> StoreResult<Vec<PutEventsRequestEntry>> {
    events
        .iter()
        .map(|ev| {
            let detail = ev.to_json();
            let size = entry_size(ev, &detail);
            if size > MAX_ENTRY_BYTES {
                return Err(fatal(format!(
                    "event {} ({}) is {size} bytes as an EventBridge entry; the limit is {MAX_ENTRY_BYTES}",
                    ev.id, ev.ty
                )));
            }
            Ok(PutEventsRequestEntry::builder()
                .event_bus_name(bus)
                .source(SOURCE)
                .detail_type(&ev.ty)
                .detail(detail)
                .build())
        })
        .collect()
}

/// Splits entries into `PutEvents` requests of at most ten entries and 256 KiB.
fn batches(entries: Vec<PutEventsRequestEntry>) -> Vec<Vec<PutEventsRequestEntry>> {
    let mut out: Vec<Vec<PutEventsRequestEntry>> = Vec::new();
    let mut size = 0;
    for e in entries {
        let n = e.source().map_or(0, str::len)
            + e.detail_type().map_or(0, str::len)
            + e.detail().map_or(0, str::len);
        match out.last_mut() {
            Some(b) if b.len() < MAX_BATCH && size + n <= MAX_REQUEST_BYTES => {
                b.push(e);
                size += n;
            }
            _ => {
                out.push(vec![e]);
                size = n;
            }
        }
    }
    out
}

impl EventBus for EventBridgeBus {
    async fn publish(&self, events: &[KeptnEvent]) -> StoreResult<()> {
        for mut batch in batches(entries(&self.bus, events)?) {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let out = self
                    .client
                    .put_events()
                    .set_entries(Some(batch.clone()))
                    .send()
                    .await
                    .map_err(store_error)?;
                if out.failed_entry_count() == 0 {
                    break;
                }
                // Result entries are in request order; a failed one has an error code.
                let failed: Vec<(PutEventsRequestEntry, String)> = batch
                    .into_iter()
                    .zip(out.entries())
                    .filter_map(|(e, r)| r.error_code().map(|c| (e, c.to_string())))
                    .collect();
                if failed.is_empty() {
                    break;
                }
                if attempt >= MAX_ATTEMPTS {
                    return Err(StoreError::backend(
                        crate::error::AwsError(format!(
                            "{} of the entries were refused by EventBridge {attempt} times (first error: {})",
                            failed.len(),
                            failed[0].1
                        )),
                        true,
                    ));
                }
                tracing::debug!(
                    failed = failed.len(),
                    "PutEvents partially failed; retrying"
                );
                tokio::time::sleep(Duration::from_millis(25 << attempt.min(6))).await;
                batch = failed.into_iter().map(|(e, _)| e).collect();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_core::Timestamp;

    fn ev(data_len: usize) -> KeptnEvent {
        KeptnEvent::new(
            "id".into(),
            "src",
            "sh.keptn.event.test.finished".into(),
            "ctx",
            serde_json::json!({ "x": "a".repeat(data_len) }),
            Timestamp::from_millis(1),
        )
    }

    #[test]
    fn an_oversized_event_is_refused_with_its_id_type_and_size() {
        let err = entries("b", &[ev(MAX_ENTRY_BYTES)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("event id (sh.keptn.event.test.finished)"),
            "{err}"
        );
        assert!(err.contains("the limit is 260096"), "{err}");
        assert!(entries("b", &[ev(1000)]).is_ok());
    }

    #[test]
    fn batches_hold_at_most_ten_entries_and_256_kb() {
        let small = entries("b", &vec![ev(10); 25]).unwrap();
        let sizes: Vec<usize> = batches(small).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![10, 10, 5]);
        let big = entries("b", &vec![ev(100 * 1024); 5]).unwrap();
        let sizes: Vec<usize> = batches(big).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }
}
