//! The durable local bus: one queue per consumer in the store's database.

use crate::{from_json, lock, Db, SqliteStore};
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{Delivery, EventBus, Queue, StoreError, StoreResult, Subscription};
use rusqlite::params;
use std::sync::Arc;

/// The event bus and its consumer queues on a [`SqliteStore`]'s database
/// (see [`SqliteStore::bus`]). Clones share everything.
///
/// A delivery is handed out once per process and stays in the queue until
/// acknowledged or dead-lettered; after a restart, unacknowledged deliveries
/// are handed out again.
#[derive(Debug, Clone)]
pub struct SqliteBus {
    store: SqliteStore,
    /// Consumers with all their patterns, in first-subscription order.
    consumers: Arc<Vec<Subscription>>,
    group: Arc<GroupCommit>,
}

impl SqliteBus {
    pub(crate) fn new(store: SqliteStore, subscriptions: Vec<Subscription>) -> Self {
        let mut consumers: Vec<Subscription> = Vec::new();
        for s in subscriptions {
            match consumers.iter_mut().find(|c| c.consumer == s.consumer) {
                Some(c) => c.patterns.extend(s.patterns),
                None => consumers.push(s),
            }
        }
        SqliteBus {
            store,
            consumers: Arc::new(consumers),
            group: Arc::default(),
        }
    }

    /// The store whose database this bus uses.
    pub fn store(&self) -> &SqliteStore {
        &self.store
    }

    /// The consumer's dead letters, oldest first, with their reasons.
    pub fn dead_letters(&self, consumer: &str) -> StoreResult<Vec<(KeptnEvent, String)>> {
        let rows: Vec<(String, String)> = self.store.read(|tx| {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT json, reason FROM dead_letters WHERE consumer = ?1 ORDER BY seq",
                )
                .db()?;
            let rows = stmt
                .query_map([consumer], |r| Ok((r.get(0)?, r.get(1)?)))
                .db()?;
            rows.collect::<Result<_, _>>().db()
        })?;
        rows.into_iter()
            .map(|(json, reason)| Ok((from_json(&json)?, reason)))
            .collect()
    }

    /// How many events wait in the consumer's queue (delivered or not, not yet acknowledged).
    pub fn pending(&self, consumer: &str) -> StoreResult<usize> {
        let n: i64 = self.store.read(|tx| {
            tx.prepare_cached("SELECT COUNT(*) FROM queue WHERE consumer = ?1")
                .db()?
                .query_row([consumer], |r| r.get(0))
                .db()
        })?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

/// Publishes waiting for the group commit that carries their rows.
type Waiter = (
    Vec<(String, String)>,
    tokio::sync::oneshot::Sender<Result<(), String>>,
);

/// Group commit: concurrent publishes are written in one transaction. The
/// first publisher to find no writer becomes the leader and writes every
/// waiting publish until none is left; the others just wait for the outcome.
/// Under load this turns one transaction per API request into one per batch.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    waiting: std::sync::Mutex<Vec<Waiter>>,
    leader: std::sync::atomic::AtomicBool,
}

impl SqliteBus {
    async fn write_rows(&self, batch: &[Waiter]) -> StoreResult<()> {
        self.store
            .write_async(|tx| {
                let mut insert = tx
                    .prepare_cached("INSERT INTO queue (consumer, json) VALUES (?1, ?2)")
                    .db()?;
                for (rows, _) in batch {
                    for (consumer, json) in rows {
                        insert.execute([consumer.as_str(), json.as_str()]).db()?;
                    }
                }
                Ok(())
            })
            .await
    }

    async fn lead(&self) {
        use std::sync::atomic::Ordering;
        let gc = &self.group;
        loop {
            let batch: Vec<Waiter> = std::mem::take(&mut *lock(&gc.waiting));
            if batch.is_empty() {
                gc.leader.store(false, Ordering::SeqCst);
                // A publish may have queued between the take and the release.
                if lock(&gc.waiting).is_empty() || gc.leader.swap(true, Ordering::SeqCst) {
                    return;
                }
                continue;
            }
            let outcome = self.write_rows(&batch).await.map_err(|e| e.to_string());
            for (_, reply) in batch {
                let _ = reply.send(outcome.clone());
            }
        }
    }
}

impl EventBus for SqliteBus {
    async fn publish(&self, events: &[KeptnEvent]) -> StoreResult<()> {
        use std::sync::atomic::Ordering;
        let rows: Vec<(String, String)> = events
            .iter()
            .flat_map(|ev| {
                let json = ev.to_json();
                self.consumers
                    .iter()
                    .filter(|s| s.matches(&ev.ty))
                    .map(move |s| (s.consumer.clone(), json.clone()))
            })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.group.waiting).push((rows, tx));
        if !self.group.leader.swap(true, Ordering::SeqCst) {
            self.lead().await;
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(crate::transient_msg(format!("publishing failed: {msg}"))),
            Err(_) => Err(crate::transient_msg(
                "publishing was interrupted".to_string(),
            )),
        }
    }
}

impl Queue for SqliteBus {
    async fn receive(&self, consumer: &str, max: usize) -> StoreResult<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // Held across the read so that concurrent receivers never get the same
        // delivery; taken before the connection's turn, and the turn ends with
        // the block: dead-lettering below needs the writer, which is the same
        // connection for an in-memory database.
        let rows: Vec<(i64, String)> = {
            let position = self.store.delivered(consumer);
            let mut after = position.lock().await;
            let _turn = self.store.read_turn().await?;
            let rows: Vec<(i64, String)> = self.store.read(|tx| {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT seq, json FROM queue WHERE consumer = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                    )
                    .db()?;
                let rows = stmt
                    .query_map(
                        params![consumer, *after, i64::try_from(max).unwrap_or(i64::MAX)],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .db()?;
                rows.collect::<Result<_, _>>().db()
            })?;
            if let Some((last, _)) = rows.last() {
                *after = *last;
            }
            rows
        };
        let mut out = Vec::with_capacity(rows.len());
        for (seq, json) in rows {
            match from_json(&json) {
                Ok(event) => out.push(Delivery {
                    receipt: seq as u64,
                    event,
                }),
                // A row that no longer parses must not hold up (or silently
                // swallow) the rows around it: it goes to the dead letters.
                Err(e) => {
                    self.dead_letter(consumer, seq as u64, &format!("unreadable event: {e}"))
                        .await?
                }
            }
        }
        Ok(out)
    }

    async fn ack(&self, consumer: &str, receipts: &[u64]) -> StoreResult<()> {
        if receipts.is_empty() {
            return Ok(());
        }
        self.store
            .write_async(|tx| {
                let mut del = tx
                    .prepare_cached("DELETE FROM queue WHERE consumer = ?1 AND seq = ?2")
                    .db()?;
                for r in receipts {
                    del.execute(params![consumer, *r as i64]).db()?;
                }
                Ok(())
            })
            .await
    }

    async fn release(&self, consumer: &str, receipts: &[u64]) -> StoreResult<()> {
        if let Some(min) = receipts.iter().min() {
            let position = self.store.delivered(consumer);
            let mut pos = position.lock().await;
            *pos = (*pos).min(*min as i64 - 1);
        }
        Ok(())
    }

    async fn dead_letter(&self, consumer: &str, receipt: u64, reason: &str) -> StoreResult<()> {
        self.store
            .write_async(|tx| {
                let moved = tx
                    .prepare_cached(
                        "INSERT INTO dead_letters (seq, consumer, json, reason) \
                     SELECT seq, consumer, json, ?3 FROM queue WHERE consumer = ?1 AND seq = ?2",
                    )
                    .db()?
                    .execute(params![consumer, receipt as i64, reason])
                    .db()?;
                if moved == 0 {
                    return Err(StoreError::NotFound(format!(
                        "delivery {receipt} of {consumer}"
                    )));
                }
                tx.prepare_cached("DELETE FROM queue WHERE consumer = ?1 AND seq = ?2")
                    .db()?
                    .execute(params![consumer, receipt as i64])
                    .db()?;
                Ok(())
            })
            .await
    }
}
