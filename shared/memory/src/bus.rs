//! The in-memory bus: one FIFO queue per consumer.

use crate::lock;
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{Delivery, EventBus, Queue, StoreError, StoreResult, Subscription};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The event bus and its consumer queues, in memory. Clones share the queues.
///
/// Semantics match `keelson-sqlite`'s bus: a delivery is handed out once and
/// stays queued until acknowledged or dead-lettered.
#[derive(Debug, Clone)]
pub struct MemoryBus {
    /// Consumers with all their patterns, in first-subscription order.
    consumers: Arc<Vec<Subscription>>,
    inner: Arc<Mutex<BusState>>,
}

#[derive(Debug, Default)]
struct BusState {
    next_receipt: u64,
    /// consumer → receipt → event.
    queues: HashMap<String, BTreeMap<u64, KeptnEvent>>,
    /// consumer → highest receipt handed out.
    delivered: HashMap<String, u64>,
    /// consumer → (receipt, event, reason).
    dead: HashMap<String, Vec<(u64, KeptnEvent, String)>>,
}

impl MemoryBus {
    /// A bus delivering to `subscriptions` (several subscriptions of one consumer are merged).
    pub fn new(subscriptions: Vec<Subscription>) -> Self {
        MemoryBus {
            consumers: Arc::new(merge_subscriptions(subscriptions)),
            inner: Arc::default(),
        }
    }

    /// The consumer's dead letters, oldest first, with their reasons.
    pub fn dead_letters(&self, consumer: &str) -> Vec<(KeptnEvent, String)> {
        let st = lock(&self.inner);
        st.dead
            .get(consumer)
            .map(|v| v.iter().map(|(_, e, r)| (e.clone(), r.clone())).collect())
            .unwrap_or_default()
    }

    /// How many events wait in the consumer's queue (delivered or not, not yet acknowledged).
    pub fn pending(&self, consumer: &str) -> usize {
        let st = lock(&self.inner);
        st.queues.get(consumer).map_or(0, BTreeMap::len)
    }
}

/// One subscription per consumer, patterns concatenated, in first-appearance order.
fn merge_subscriptions(subs: Vec<Subscription>) -> Vec<Subscription> {
    let mut out: Vec<Subscription> = Vec::new();
    for s in subs {
        match out.iter_mut().find(|o| o.consumer == s.consumer) {
            Some(o) => o.patterns.extend(s.patterns),
            None => out.push(s),
        }
    }
    out
}

impl EventBus for MemoryBus {
    async fn publish(&self, events: &[KeptnEvent]) -> StoreResult<()> {
        let mut st = lock(&self.inner);
        for ev in events {
            for sub in self.consumers.iter().filter(|s| s.matches(&ev.ty)) {
                st.next_receipt += 1;
                let receipt = st.next_receipt;
                st.queues
                    .entry(sub.consumer.clone())
                    .or_default()
                    .insert(receipt, ev.clone());
            }
        }
        Ok(())
    }
}

impl Queue for MemoryBus {
    async fn receive(&self, consumer: &str, max: usize) -> StoreResult<Vec<Delivery>> {
        let mut st = lock(&self.inner);
        let after = st.delivered.get(consumer).copied().unwrap_or(0);
        let out: Vec<Delivery> = st
            .queues
            .get(consumer)
            .map(|q| {
                q.range(after + 1..)
                    .take(max)
                    .map(|(r, e)| Delivery {
                        receipt: *r,
                        event: e.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(last) = out.last() {
            st.delivered.insert(consumer.to_string(), last.receipt);
        }
        Ok(out)
    }

    async fn ack(&self, consumer: &str, receipts: &[u64]) -> StoreResult<()> {
        let mut st = lock(&self.inner);
        if let Some(q) = st.queues.get_mut(consumer) {
            for r in receipts {
                q.remove(r);
            }
        }
        Ok(())
    }

    async fn release(&self, consumer: &str, receipts: &[u64]) -> StoreResult<()> {
        if let Some(min) = receipts.iter().min() {
            let mut st = lock(&self.inner);
            let pos = st.delivered.entry(consumer.to_string()).or_insert(0);
            *pos = (*pos).min(min.saturating_sub(1));
        }
        Ok(())
    }

    async fn dead_letter(&self, consumer: &str, receipt: u64, reason: &str) -> StoreResult<()> {
        let mut st = lock(&self.inner);
        let ev = st
            .queues
            .get_mut(consumer)
            .and_then(|q| q.remove(&receipt))
            .ok_or_else(|| StoreError::NotFound(format!("delivery {receipt} of {consumer}")))?;
        st.dead
            .entry(consumer.to_string())
            .or_default()
            .push((receipt, ev, reason.to_string()));
        Ok(())
    }
}
