//! The durable local bus: one queue per consumer in the store's database.

use crate::events::{insert_rows_at, EventRow};
use crate::{from_json, Db, SqliteStore};
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{Delivery, EventBus, Queue, StoreError, StoreResult, Subscription};
use rusqlite::{params, OptionalExtension};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Events a consumer has been published by this process, by receipt, from
/// their commit until a receive hands them out: decoded already, so the
/// receive reads only the receipts from its queue (an index) instead of
/// every event's JSON, and parses none. Receipts not here (published by
/// another process, handed out before and released, or past [`FRESH_MAX`])
/// are read from the table as before.
pub(crate) type Fresh = BTreeMap<i64, Arc<KeptnEvent>>;

/// Most events kept per consumer: one that does not receive (not running in
/// this process) costs no more memory than this.
const FRESH_MAX: usize = 1024;

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
        // (consumer, payload, index of the event in `events`)
        let mut rows: Vec<(String, Payload, usize)> = Vec::new();
        let mut stored: Vec<EventRow> = Vec::new();
        for (n, ev) in events.iter().enumerate() {
            let json = ev.to_json();
            let subscribers = self.consumers.iter().filter(|s| s.matches(&ev.ty));
            let stores = self.stores_for.as_deref();
            if subscribers
                .clone()
                .any(|s| Some(s.consumer.as_str()) == stores)
            {
                let at = stored.len();
                for s in subscribers.filter(|s| Some(s.consumer.as_str()) != stores) {
                    rows.push((s.consumer.clone(), Payload::Stored(at), n));
                }
                stored.push(EventRow::with_json(ev, json));
            } else {
                let json: Arc<str> = json.into();
                for s in subscribers {
                    rows.push((s.consumer.clone(), Payload::Json(json.clone()), n));
                }
            }
        }
        if rows.is_empty() && stored.is_empty() {
            return Ok(());
        }
        // Concurrent publishes share a transaction (group commit): under load
        // one commit carries many API requests' events.
        let rows = Arc::new(rows);
        let queued = rows.clone();
        let receipts = self
            .store
            .write_grouped(move |tx| {
                let (_, seqs) = insert_rows_at(tx, &stored)?;
                let mut insert = tx
                    .prepare_cached("INSERT INTO queue (consumer, json, event) VALUES (?1, ?2, ?3)")
                    .db()?;
                let mut receipts = Vec::with_capacity(queued.len());
                for (consumer, payload, _) in queued.iter() {
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
                    receipts.push(tx.last_insert_rowid());
                }
                Ok(receipts)
            })
            .await?;
        // Committed: the consumers' receives can take the events as they are.
        let shared: Vec<Arc<KeptnEvent>> = events.iter().cloned().map(Arc::new).collect();
        let mut fresh = self.store.fresh();
        for ((consumer, _, n), receipt) in rows.iter().zip(receipts) {
            let queue = match fresh.get_mut(consumer.as_str()) {
                Some(q) => q,
                None => fresh.entry(consumer.clone()).or_default(),
            };
            if queue.len() < FRESH_MAX {
                queue.insert(receipt, shared[*n].clone());
            }
        }
        Ok(())
    }
}

/// The JSON of a consumer's queue row: its own, or the stored event's it
/// names; None when that event (or the row) is gone.
fn row_json(
    tx: &rusqlite::Transaction<'_>,
    consumer: &str,
    seq: i64,
) -> StoreResult<Option<String>> {
    let j: Option<Option<String>> = tx
        .prepare_cached(
            "SELECT CASE WHEN q.event IS NULL THEN q.json ELSE e.json END \
             FROM queue q LEFT JOIN events e ON e.seq = q.event \
             WHERE q.consumer = ?1 AND q.seq = ?2",
        )
        .db()?
        .query_row(params![consumer, seq], |r| r.get(0))
        .optional()
        .db()?;
    Ok(j.flatten())
}

/// A queue row as a receive reads it.
enum Row {
    /// Published by this process: in [`Fresh`].
    Fresh,
    /// The event's JSON.
    Json(String),
    /// The stored event the row named is gone.
    Gone,
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
        let (rows, mut taken) = {
            let position = self.store.delivered(consumer);
            let mut after = position.lock().await;
            let _turn = self.store.read_turn().await?;
            // The receipts past the position, and (one snapshot) the JSON of
            // those not published by this process since.
            let rows: Vec<(i64, Row)> = self.store.read(|tx| {
                // (receipt, whether the stored event a row names is still there)
                let receipts: Vec<(i64, bool)> = {
                    let mut stmt = tx
                        .prepare_cached(
                            "SELECT q.seq, q.event IS NULL OR e.seq IS NOT NULL \
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
                    rows.collect::<Result<_, _>>().db()?
                };
                let known: Vec<bool> = {
                    let fresh = self.store.fresh();
                    let known = fresh.get(consumer);
                    receipts
                        .iter()
                        .map(|(seq, _)| known.is_some_and(|k| k.contains_key(seq)))
                        .collect()
                };
                receipts
                    .into_iter()
                    .zip(known)
                    .map(|((seq, there), known)| {
                        if !there {
                            return Ok((seq, Row::Gone));
                        }
                        if known {
                            return Ok((seq, Row::Fresh));
                        }
                        Ok((
                            seq,
                            match row_json(tx, consumer, seq)? {
                                Some(j) => Row::Json(j),
                                None => Row::Gone,
                            },
                        ))
                    })
                    .collect::<StoreResult<_>>()
            })?;
            if let Some((last, _)) = rows.last() {
                *after = *last;
            }
            // Taken out of the fresh events under the position's lock, with
            // any at or below the position (published while a read of the
            // table handed them out).
            let mut fresh = self.store.fresh();
            let taken = match (fresh.get_mut(consumer), rows.last()) {
                (Some(q), Some((last, _))) => {
                    let rest = q.split_off(&(last + 1));
                    std::mem::replace(q, rest)
                }
                _ => Fresh::new(),
            };
            (rows, taken)
        };
        let mut out = Vec::with_capacity(rows.len());
        for (seq, row) in rows {
            let json = match row {
                Row::Fresh => match taken.remove(&seq) {
                    Some(ev) => {
                        let event = Arc::try_unwrap(ev).unwrap_or_else(|ev| (*ev).clone());
                        out.push(Delivery {
                            receipt: seq as u64,
                            event,
                        });
                        continue;
                    }
                    // Not expected (fresh events leave only here, under the
                    // position's lock): read it from the table.
                    None => self.store.read(|tx| row_json(tx, consumer, seq))?,
                },
                Row::Json(j) => Some(j),
                Row::Gone => None,
            };
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
                for r in &receipts {
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

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_core::Timestamp;
    use serde_json::json;

    fn subs() -> Vec<Subscription> {
        vec![
            Subscription::new("datastore", &["sh.keptn.event.>"]),
            Subscription::new("shipyard", &["sh.keptn.event.>"]),
            Subscription::new("lighthouse", &["sh.keptn.event.evaluation.finished"]),
        ]
    }

    /// Events of every shape a delivery carries: floats, unicode and
    /// escapes, extensions, null and absent fields.
    fn assorted() -> Vec<KeptnEvent> {
        let datas = [
            json!({"project": "p", "stage": "dev", "service": "s", "score": 0.1 + 0.2, "big": 1e300, "tiny": 5e-324, "neg": -0.0}),
            json!({"project": "p", "text": "grüße \u{1F600} \"quoted\" \\ \n\t\u{0001}", "list": [1, 2.5, null, true]}),
            json!(null),
            json!({"nested": {"deep": {"deeper": [{"a": 1}, {"b": [[], {}]}]}}, "n": 18446744073709551615u64, "m": -9223372036854775808i64}),
        ];
        datas
            .into_iter()
            .enumerate()
            .map(|(i, data)| {
                let ty = if i % 2 == 0 {
                    "sh.keptn.event.evaluation.finished"
                } else {
                    "sh.keptn.event.deployment.triggered"
                };
                let mut e = KeptnEvent::new(
                    format!("id-{i}"),
                    "src",
                    ty.into(),
                    "ctx",
                    data,
                    Timestamp::from_millis(1_800_000_000_000 + i as i64),
                );
                if i == 1 {
                    e.triggeredid = Some("t".into());
                    e.gitcommitid = Some("g".into());
                    e.datacontenttype = Some("application/json".into());
                    e.extensions
                        .insert("traceparent".into(), json!("00-ab-cd-01"));
                    e.extensions.insert("x".into(), json!({"y": [1.5]}));
                }
                e
            })
            .collect()
    }

    fn as_pairs(d: Vec<Delivery>) -> Vec<(u64, KeptnEvent)> {
        d.into_iter().map(|d| (d.receipt, d.event)).collect()
    }

    /// What a receive hands out from the events this process published is
    /// what it would have read from the table (another process's receive).
    #[tokio::test]
    async fn fresh_deliveries_equal_what_the_table_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let here = SqliteStore::open(&path).unwrap();
        let bus = here.bus(subs()).storing_events_for("datastore");
        let events = assorted();
        bus.publish(&events).await.unwrap();
        // A stored id published again with other content: a copy is queued.
        let mut again = events[0].clone();
        again.data = json!({"project": "p", "again": 1.25});
        bus.publish(std::slice::from_ref(&again)).await.unwrap();
        assert_eq!(here.fresh()["shipyard"].len(), 5);
        assert_eq!(here.fresh()["lighthouse"].len(), 3);

        let other = SqliteStore::open(&path).unwrap();
        let theirs = other.bus(subs()).storing_events_for("datastore");
        for consumer in ["shipyard", "lighthouse"] {
            let from_table = as_pairs(theirs.receive(consumer, 100).await.unwrap());
            let fresh = as_pairs(bus.receive(consumer, 100).await.unwrap());
            assert_eq!(fresh, from_table, "{consumer}");
            assert!(here.fresh()[consumer].is_empty(), "{consumer}: handed out");
        }
        let third = SqliteStore::open(&path).unwrap();
        let shipyard: Vec<KeptnEvent> =
            as_pairs(third.bus(subs()).receive("shipyard", 100).await.unwrap())
                .into_iter()
                .map(|(_, e)| e)
                .collect();
        assert_eq!(shipyard.len(), 5);
        let mut published = events.clone();
        published.push(again);
        assert_eq!(shipyard, published, "as published, in order");
    }

    /// Released deliveries come again from the table; a consumer that does
    /// not receive keeps at most FRESH_MAX events in memory, and still gets
    /// every event, in order, when it does.
    #[tokio::test]
    async fn released_and_uncached_deliveries_are_read_from_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("k.db")).unwrap();
        let bus = store.bus(subs()).storing_events_for("datastore");
        let events = assorted();
        bus.publish(&events).await.unwrap();
        let first = as_pairs(bus.receive("shipyard", 100).await.unwrap());
        assert_eq!(first.len(), 4);
        let receipts: Vec<u64> = first.iter().map(|(r, _)| *r).collect();
        bus.release("shipyard", &receipts[1..]).await.unwrap();
        let again = as_pairs(bus.receive("shipyard", 100).await.unwrap());
        assert_eq!(again, first[1..].to_vec());

        let many: Vec<KeptnEvent> = (0..FRESH_MAX + 300)
            .map(|i| {
                let mut e = events[i % 4].clone();
                e.id = format!("many-{i}");
                e
            })
            .collect();
        for chunk in many.chunks(100) {
            bus.publish(chunk).await.unwrap();
        }
        assert_eq!(store.fresh()["shipyard"].len(), FRESH_MAX);
        let mut got = vec![];
        loop {
            let batch = bus.receive("shipyard", 256).await.unwrap();
            if batch.is_empty() {
                break;
            }
            got.extend(batch.into_iter().map(|d| d.event));
        }
        assert_eq!(got, many);
        assert!(store.fresh()["shipyard"].is_empty());
    }
}
