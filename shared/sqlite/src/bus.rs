//! The durable local bus: one queue per consumer in the store's database.

use crate::events::{insert_rows_at, EventRow};
use crate::{from_json, Db, SqliteStore};
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
    /// The consumer (the datastore) whose deliveries are stored as events
    /// in the publishing transaction instead of queued (see
    /// [`SqliteBus::storing_events_for`]).
    stores_for: Option<Arc<str>>,
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
            stores_for: None,
        }
    }

    /// Publishes store their events in the datastore's table in the same
    /// transaction, instead of queueing them for `consumer` (the datastore
    /// function, whose whole work is storing them) to decode and store in
    /// another. The datastore and the bus share this database, so the event
    /// is stored exactly once either way, and queryable as soon as it is
    /// published. `consumer` keeps its queue (rows queued before are still
    /// delivered to it) but gets nothing new.
    pub fn storing_events_for(mut self, consumer: &str) -> Self {
        self.stores_for = Some(consumer.into());
        self
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

impl EventBus for SqliteBus {
    async fn publish(&self, events: &[KeptnEvent]) -> StoreResult<()> {
        // What a queue row carries: the event's JSON, or (for an event this
        // publish stores for the datastore) the stored row it names.
        enum Payload {
            Json(Arc<str>),
            Stored(usize),
        }
        let mut rows: Vec<(String, Payload)> = Vec::new();
        let mut stored: Vec<EventRow> = Vec::new();
        for ev in events {
            let json = ev.to_json();
            let subscribers = self.consumers.iter().filter(|s| s.matches(&ev.ty));
            let stores = self.stores_for.as_deref();
            if subscribers
                .clone()
                .any(|s| Some(s.consumer.as_str()) == stores)
            {
                let at = stored.len();
                for s in subscribers.filter(|s| Some(s.consumer.as_str()) != stores) {
                    rows.push((s.consumer.clone(), Payload::Stored(at)));
                }
                stored.push(EventRow::with_json(ev, json));
            } else {
                let json: Arc<str> = json.into();
                for s in subscribers {
                    rows.push((s.consumer.clone(), Payload::Json(json.clone())));
                }
            }
        }
        if rows.is_empty() && stored.is_empty() {
            return Ok(());
        }
        // Concurrent publishes share a transaction (group commit): under load
        // one commit carries many API requests' events.
        self.store
            .write_grouped(move |tx| {
                let (_, seqs) = insert_rows_at(tx, &stored)?;
                let mut insert = tx
                    .prepare_cached("INSERT INTO queue (consumer, json, event) VALUES (?1, ?2, ?3)")
                    .db()?;
                for (consumer, payload) in &rows {
                    match payload {
                        Payload::Json(json) => {
                            insert.execute(params![consumer, &**json, None::<i64>])
                        }
                        // An id stored before keeps its stored event, which
                        // may differ from this one: the row carries a copy
                        // of what was published.
                        Payload::Stored(i) => match seqs[*i] {
                            Some(seq) => insert.execute(params![consumer, "", seq]),
                            None => insert.execute(params![consumer, stored[*i].json, None::<i64>]),
                        },
                    }
                    .db()?;
                }
                Ok(())
            })
            .await
    }
}

impl Queue for SqliteBus {
    fn stores_events_for(&self) -> Option<&str> {
        self.stores_for.as_deref()
    }

    async fn receive(&self, consumer: &str, max: usize) -> StoreResult<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // Held across the read so that concurrent receivers never get the same
        // delivery; taken before the connection's turn, and the turn ends with
        // the block: dead-lettering below needs the writer, which is the same
        // connection for an in-memory database.
        let rows: Vec<(i64, Option<String>)> = {
            let position = self.store.delivered(consumer);
            let mut after = position.lock().await;
            let _turn = self.store.read_turn().await?;
            let rows: Vec<(i64, Option<String>)> = self.store.read(|tx| {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT q.seq, CASE WHEN q.event IS NULL THEN q.json ELSE e.json END \
                         FROM queue q LEFT JOIN events e ON e.seq = q.event \
                         WHERE q.consumer = ?1 AND q.seq > ?2 ORDER BY q.seq LIMIT ?3",
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
            // The stored event the row named is gone (its project was
            // deleted meanwhile): there is nothing left to deliver.
            let Some(json) = json else {
                self.ack(consumer, &[seq as u64]).await?;
                continue;
            };
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
        let consumer = consumer.to_string();
        let receipts = receipts.to_vec();
        self.store
            .write_grouped(move |tx| {
                let mut del = tx
                    .prepare_cached("DELETE FROM queue WHERE consumer = ?1 AND seq = ?2")
                    .db()?;
                for r in receipts {
                    del.execute(params![consumer, r as i64]).db()?;
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
        let (consumer, reason) = (consumer.to_string(), reason.to_string());
        self.store
            .write_grouped(move |tx| {
                let moved = tx
                    .prepare_cached(
                        "INSERT INTO dead_letters (seq, consumer, json, reason) \
                     SELECT seq, consumer, \
                     COALESCE((SELECT e.json FROM events e WHERE e.seq = queue.event), json), ?3 \
                     FROM queue WHERE consumer = ?1 AND seq = ?2",
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
