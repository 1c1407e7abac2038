//! The datastore: [`EventStore`].
//!
//! An event is one item `EV#<id>` / `EV` (the id's uniqueness is its key),
//! indexed by context (`gsi1`), by project then type (`gsi2`) and by type
//! (`gsi3`), each sorted by its storage order `<time key>#<seq>`. The root of a
//! context is a pointer item `CTX#<ctx>` / `ROOT`, moved by conditional writes.

use super::io::{names, put_action, values, Cond, Sk, MAX_ITEM_BYTES, Q};
use super::item::{get_n, get_s, item, key, limit, n, opt_s, s, Item};
use super::keys::*;
use super::DynamoStore;
use crate::error::store_error;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{EventStore, StoreResult};
use keelson_core::query::{self, EventPage, EventQuery, TypeQuery};
use keelson_core::timestamp::Timestamp;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Attempts at moving a context's root pointer against concurrent writers.
const ROOT_ATTEMPTS: usize = 10;

/// The condition an event must still meet to be deleted: `<attr> <op> <value>`.
pub(crate) struct DeleteIf {
    attr: &'static str,
    op: &'static str,
    value: AttributeValue,
}

/// A stored event with its storage order.
struct Stored {
    ord: String,
    ev: KeptnEvent,
}

fn stored(it: &Item) -> StoreResult<Stored> {
    let ord = get_s(it, "ord")?.to_string();
    let ev: KeptnEvent = super::item::get_json(it, "json")?;
    Ok(Stored { ord, ev })
}

/// What deleting an event needs to know, from its index item (projection
/// ALL): the delete is conditional on `ord`, unique to each stored event, so
/// these are the attributes of the item it deletes.
pub(crate) struct Victim {
    id: String,
    ord: String,
    ctx: String,
    /// The triggeredid it invalidates, if it is an invalidation.
    invalidates: Option<String>,
}

fn victim(it: &Item) -> StoreResult<Victim> {
    let ty = get_s(it, "ty")?;
    let tid = opt_s(it, "tid")?;
    Ok(Victim {
        id: get_s(it, "id")?.to_string(),
        ord: get_s(it, "ord")?.to_string(),
        ctx: get_s(it, "ctx")?.to_string(),
        invalidates: tid.filter(|_| query::is_invalidation(ty)).map(String::from),
    })
}

/// The root pointer of a context: (event id, time).
fn root_of(it: &Item) -> StoreResult<(String, i64)> {
    Ok((get_s(it, "id")?.to_string(), get_n(it, "time")?))
}

/// Whether `ev` (an event item, if any) is the event a root pointer names.
fn names_event(ptr: &Item, ev: Option<&Item>) -> StoreResult<bool> {
    let Some(ev) = ev else { return Ok(false) };
    // Pointers name the event's storage order too: an id deleted and stored
    // again is another event.
    Ok(get_s(ev, "id")? == get_s(ptr, "id")?
        && opt_s(ptr, "ord")?.is_none_or(|o| o == get_s(ev, "ord").unwrap_or_default()))
}

fn event_item(ev: &KeptnEvent, ord: &str, json: String) -> Item {
    let mut it = item([
        ("pk", s(event_pk(&ev.id))),
        ("sk", s(EVENT_SK)),
        ("id", s(&ev.id)),
        ("ord", s(ord)),
        ("time", n(ev.time.millis())),
        ("ty", s(&ev.ty)),
        ("ctx", s(&ev.shkeptncontext)),
        ("json", s(json)),
        ("gsi1pk", s(ctx_pk(&ev.shkeptncontext))),
        ("gsi1sk", s(ord)),
        ("gsi3pk", s(type_pk(&ev.ty))),
        ("gsi3sk", s(ord)),
    ]);
    if let Some(p) = ev.project() {
        it.insert("project".into(), s(p));
        it.insert("gsi2pk".into(), s(project_events_pk(p)));
        it.insert("gsi2sk".into(), s(format!("{}#{ord}", esc(&ev.ty))));
    }
    if let Some(t) = &ev.triggeredid {
        it.insert("tid".into(), s(t));
    }
    it
}

fn invalidation_of(ev: &KeptnEvent) -> Option<&str> {
    ev.triggeredid
        .as_deref()
        .filter(|_| query::is_invalidation(&ev.ty))
}

fn newest_first(a: &Stored, b: &Stored) -> std::cmp::Ordering {
    b.ord.cmp(&a.ord)
}

impl DynamoStore {
    /// Records the types of `events` in the type registry (before the events
    /// themselves, so no stored event is missing from it).
    async fn register_types(&self, events: &[KeptnEvent]) -> StoreResult<()> {
        let fresh: Vec<String> = {
            let known = self.known_types.lock().unwrap_or_else(|p| p.into_inner());
            let mut v: Vec<String> = events
                .iter()
                .map(|e| e.ty.clone())
                .filter(|t| !known.contains(t))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        for ty in fresh {
            self.put(item([
                ("pk", s(TYPES_PK)),
                ("sk", s(type_sk(&ty))),
                ("ty", s(&ty)),
            ]))
            .await?;
            self.known_types
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ty);
        }
        Ok(())
    }

    async fn event_types(&self) -> StoreResult<Vec<String>> {
        let items = self.query_all(&Q::table(TYPES_PK, Sk::Any)).await?;
        items
            .iter()
            .map(|it| get_s(it, "ty").map(String::from))
            .collect()
    }

    /// Reserves `count` storage sequence numbers; returns the first.
    async fn reserve_seqs(&self, count: usize) -> StoreResult<u64> {
        let out = self
            .client
            .update_item()
            .table_name(self.table.as_ref())
            .set_key(Some(key(META_PK, SEQ_SK)))
            .update_expression("ADD #n :c")
            .set_expression_attribute_names(names([("#n", "n")]))
            .set_expression_attribute_values(values([(":c", n(count))]))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(store_error)?;
        let attrs = out.attributes.unwrap_or_default();
        let last: u64 = get_n(&attrs, "n")?;
        last.checked_sub(count as u64 - 1)
            .ok_or_else(|| super::item::malformed(&attrs, "the storage counter went backwards"))
    }

    /// Stores one event; false if its id is taken.
    async fn insert_one(&self, ev: &KeptnEvent, seq: u64) -> StoreResult<bool> {
        let ord = ord_key(ev.time, seq);
        let json = ev.to_json();
        if json.len() > MAX_ITEM_BYTES {
            return Err(limit(format!(
                "event {} is {} bytes; items hold at most {MAX_ITEM_BYTES}",
                ev.id,
                json.len()
            )));
        }
        let it = event_item(ev, &ord, json);
        let root_pk = ctx_pk(&ev.shkeptncontext);
        for _ in 0..ROOT_ATTEMPTS {
            let root = match self.get(&root_pk, ROOT_SK).await? {
                Some(r) => Some(root_of(&r)?),
                None => None,
            };
            let becomes_root = root.as_ref().is_none_or(|(_, t)| ev.time.millis() < *t);
            let mut actions = vec![put_action(it.clone(), Some("attribute_not_exists(pk)"))?];
            if becomes_root {
                let ptr = item([
                    ("pk", s(&root_pk)),
                    ("sk", s(ROOT_SK)),
                    ("id", s(&ev.id)),
                    ("time", n(ev.time.millis())),
                    ("ord", s(&ord)),
                ]);
                let mut a = put_action(ptr, None)?;
                if let Some(p) = a.put.as_mut() {
                    match &root {
                        None => p.condition_expression = Some("attribute_not_exists(pk)".into()),
                        Some((old, _)) => {
                            p.condition_expression = Some("#id = :old".into());
                            p.expression_attribute_names = names([("#id", "id")]);
                            p.expression_attribute_values = values([(":old", s(old))]);
                        }
                    }
                }
                actions.push(a);
            }
            if let Some(tid) = invalidation_of(ev) {
                actions.push(put_action(
                    item([
                        ("pk", s(INVALIDATIONS_PK)),
                        ("sk", s(invalidation_sk(tid, &ev.id))),
                        ("tid", s(tid)),
                    ]),
                    None,
                )?);
            }
            if actions.len() == 1 {
                return self.put_if(it.clone(), Cond::absent()).await;
            }
            match self.transact(actions).await {
                Ok(()) => return Ok(true),
                Err(e) if e.condition_failed(0) => return Ok(false),
                Err(e) if (becomes_root && e.condition_failed(1)) || e.conflicted() => continue,
                Err(e) => return Err(e.into_store()),
            }
        }
        Err(keelson_core::ports::StoreError::Conflict)
    }

    /// Events of one query, parsed, passing `keep`.
    async fn collect(
        &self,
        q: &Q,
        keep: &(dyn Fn(&KeptnEvent) -> bool + Sync),
        out: &mut Vec<Stored>,
    ) -> StoreResult<()> {
        self.query_each(q, |it| {
            let st = stored(&it)?;
            if keep(&st.ev) {
                out.push(st);
            }
            Ok(true)
        })
        .await
    }

    /// The events of `q` (all of them, for the total count), in no order.
    async fn event_candidates(&self, q: &EventQuery) -> StoreResult<Vec<Stored>> {
        let keep = |e: &KeptnEvent| q.matches(e);
        let mut out = Vec::new();
        let range = |prefix: &str| time_between(prefix, q.from_time, q.before_time);
        if let Some(id) = &q.event_id {
            if let Some(it) = self.get(&event_pk(id), EVENT_SK).await? {
                let st = stored(&it)?;
                if keep(&st.ev) {
                    out.push(st);
                }
            }
        } else if let Some(ctx) = &q.keptn_context {
            if let Some((a, b)) = range("") {
                let qq = Q::index("gsi1", ctx_pk(ctx), Sk::Between(a, b));
                self.collect(&qq, &keep, &mut out).await?;
            }
        } else if let Some(p) = &q.project {
            let sk = match &q.ty {
                Some(ty) => match range(&format!("{}#", esc(ty))) {
                    Some((a, b)) => Sk::Between(a, b),
                    None => return Ok(out),
                },
                None => Sk::Any,
            };
            let qq = Q::index("gsi2", project_events_pk(p), sk);
            self.collect(&qq, &keep, &mut out).await?;
        } else {
            let Some((a, b)) = range("") else {
                return Ok(out);
            };
            let types = match &q.ty {
                Some(ty) => vec![ty.clone()],
                // No key narrows the query: walk every type's partition.
                None => self.event_types().await?,
            };
            for ty in types {
                let qq = Q::index("gsi3", type_pk(&ty), Sk::Between(a.clone(), b.clone()));
                self.collect(&qq, &keep, &mut out).await?;
            }
        }
        Ok(out)
    }

    /// Keeps the events that are their context's root. A pointer naming none
    /// of the events may name a deleted one (a purge that stopped part-way
    /// before this version, a hand-deleted item): such a pointer is checked on
    /// the table and repaired.
    async fn only_roots(&self, events: Vec<Stored>) -> StoreResult<Vec<Stored>> {
        let ctxs: HashMap<String, &str> = events
            .iter()
            .map(|st| (ctx_pk(&st.ev.shkeptncontext), st.ev.shkeptncontext.as_str()))
            .collect();
        let keys = ctxs
            .keys()
            .map(|pk| (pk.clone(), ROOT_SK.to_string()))
            .collect();
        let listed: HashSet<&str> = events.iter().map(|st| st.ev.id.as_str()).collect();
        let mut roots: HashMap<String, String> = HashMap::new();
        let mut unsure: Vec<Item> = Vec::new();
        for it in self.batch_get(keys).await? {
            let id = get_s(&it, "id")?;
            if listed.contains(id) {
                roots.insert(get_s(&it, "pk")?.to_string(), id.to_string());
            } else {
                unsure.push(it);
            }
        }
        if !unsure.is_empty() {
            let targets = unsure
                .iter()
                .map(|p| Ok((event_pk(get_s(p, "id")?), EVENT_SK.to_string())))
                .collect::<StoreResult<Vec<_>>>()?;
            let found: HashMap<String, Item> = self
                .batch_get(targets)
                .await?
                .into_iter()
                .map(|it| Ok((get_s(&it, "id")?.to_string(), it)))
                .collect::<StoreResult<_>>()?;
            for ptr in &unsure {
                if names_event(ptr, found.get(get_s(ptr, "id")?))? {
                    continue; // a root outside the query
                }
                let pk = get_s(ptr, "pk")?;
                if let Some(ctx) = ctxs.get(pk) {
                    if let Some(id) = self.reelect_root(ctx, &HashSet::new()).await? {
                        roots.insert(pk.to_string(), id);
                    }
                }
            }
        }
        Ok(events
            .into_iter()
            .filter(|st| roots.get(&ctx_pk(&st.ev.shkeptncontext)) == Some(&st.ev.id))
            .collect())
    }

    /// The triggeredids that have an invalidation.
    async fn invalidated(&self) -> StoreResult<HashSet<String>> {
        let items = self.query_all(&Q::table(INVALIDATIONS_PK, Sk::Any)).await?;
        items
            .iter()
            .map(|it| get_s(it, "tid").map(String::from))
            .collect()
    }

    /// Deletes events (each if it is still the stored event of that id and
    /// `cond` holds on it) and their invalidation markers. Context by context,
    /// the root pointer is moved off the context's victims BEFORE they are
    /// deleted, so a run that stops part-way (a timeout, throttling) never
    /// leaves a pointer on a deleted event, and the marker is deleted before
    /// its event (a stop in between leaves an event the next purge deletes).
    /// Returns how many were deleted by this call (an event found gone — a
    /// concurrent purge, or a delete the SDK retried after it had succeeded —
    /// is not counted; what it needed is done all the same).
    pub(crate) async fn delete_events(
        &self,
        victims: Vec<Victim>,
        cond: DeleteIf,
    ) -> StoreResult<u64> {
        let mut by_ctx: BTreeMap<String, Vec<Victim>> = BTreeMap::new();
        for v in victims {
            by_ctx.entry(v.ctx.clone()).or_default().push(v);
        }
        let mut count = 0;
        for (ctx, vs) in by_ctx {
            let doomed: HashSet<String> = vs.iter().map(|v| v.id.clone()).collect();
            self.reelect_root(&ctx, &doomed).await?;
            for v in vs {
                if let Some(tid) = &v.invalidates {
                    self.delete_returning(INVALIDATIONS_PK, &invalidation_sk(tid, &v.id), None)
                        .await?;
                }
                let c =
                    Cond::cmp("ord", "=", s(&v.ord)).and(cond.attr, cond.op, cond.value.clone());
                if self
                    .delete_returning(&event_pk(&v.id), EVENT_SK, Some(c))
                    .await?
                    .is_some()
                {
                    count += 1;
                }
            }
        }
        Ok(count)
    }

    /// Makes the root pointer of `ctx` name a stored event that is not
    /// `doomed`: if it names a doomed event or one that is no longer stored,
    /// it moves to the earliest other stored event (or is removed). Returns
    /// the root's id after.
    async fn reelect_root(
        &self,
        ctx: &str,
        doomed: &HashSet<String>,
    ) -> StoreResult<Option<String>> {
        let pk = ctx_pk(ctx);
        for _ in 0..ROOT_ATTEMPTS {
            let Some(ptr) = self.get(&pk, ROOT_SK).await? else {
                return Ok(None);
            };
            let (old, _) = root_of(&ptr)?;
            if !doomed.contains(&old) {
                let target = self.get(&event_pk(&old), EVENT_SK).await?;
                if names_event(&ptr, target.as_ref())? {
                    return Ok(Some(old));
                }
            }
            // The index lags the table: skip the doomed and the old root, and
            // check the candidate on the table itself.
            let mut candidates = Vec::new();
            self.query_each(&Q::index("gsi1", &pk, Sk::Any).page(25), |it| {
                let id = get_s(&it, "id")?.to_string();
                if !doomed.contains(&id) && id != old {
                    candidates.push(id);
                }
                Ok(candidates.len() < 5)
            })
            .await?;
            let mut next = None;
            for id in candidates {
                if let Some(it) = self.get(&event_pk(&id), EVENT_SK).await? {
                    next = Some(it);
                    break;
                }
            }
            let (done, root) = match next {
                None => (
                    self.delete_returning(&pk, ROOT_SK, Some(Cond::cmp("id", "=", s(&old))))
                        .await?
                        .is_some(),
                    None,
                ),
                Some(it) => {
                    let id = get_s(&it, "id")?.to_string();
                    let ptr = item([
                        ("pk", s(&pk)),
                        ("sk", s(ROOT_SK)),
                        ("id", s(&id)),
                        ("time", n(get_n::<i64>(&it, "time")?)),
                        ("ord", s(get_s(&it, "ord")?)),
                    ]);
                    (
                        self.put_if(ptr, Cond::cmp("id", "=", s(&old))).await?,
                        Some(id),
                    )
                }
            };
            if done {
                return Ok(root);
            }
        }
        Err(keelson_core::ports::StoreError::Conflict)
    }

    /// Deletes the events of a project.
    pub(crate) async fn delete_project_events(&self, project: &str) -> StoreResult<u64> {
        let items = self
            .query_all(&Q::index("gsi2", project_events_pk(project), Sk::Any))
            .await?;
        let victims = items.iter().map(victim).collect::<StoreResult<_>>()?;
        let cond = DeleteIf {
            attr: "project",
            op: "=",
            value: s(project),
        };
        self.delete_events(victims, cond).await
    }
}

impl EventStore for DynamoStore {
    async fn insert_events(&self, events: &[KeptnEvent]) -> StoreResult<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        self.register_types(events).await?;
        let first = self.reserve_seqs(events.len()).await?;
        let mut added = 0;
        // In order: of equal times the later stored is the newer, and the root
        // of a context is decided against what was stored before.
        for (i, ev) in events.iter().enumerate() {
            if self.insert_one(ev, first + i as u64).await? {
                added += 1;
            }
        }
        Ok(added)
    }

    async fn query_events(&self, q: &EventQuery) -> StoreResult<EventPage> {
        let mut hits = self.event_candidates(q).await?;
        if q.root {
            hits = self.only_roots(hits).await?;
        }
        hits.sort_by(newest_first);
        let page_size = q.effective_page_size();
        let total_count = hits.len();
        let events = hits
            .into_iter()
            .skip(q.offset)
            .take(page_size)
            .map(|st| st.ev)
            .collect();
        Ok(EventPage::at(events, q.offset, page_size, total_count))
    }

    async fn query_by_type(&self, q: &TypeQuery) -> StoreResult<Vec<KeptnEvent>> {
        let limit = q.effective_limit();
        let invalidated = if q.exclude_invalidated {
            self.invalidated().await?
        } else {
            HashSet::new()
        };
        let term = |k: &str| q.filter.iter().find(|t| t.key == k);
        let mut parts: Vec<Q> = Vec::new();
        if let Some(t) = term("shkeptncontext") {
            if let Some((a, b)) = time_between("", q.from_time, None) {
                for v in &t.values {
                    parts.push(Q::index(
                        "gsi1",
                        ctx_pk(v),
                        Sk::Between(a.clone(), b.clone()),
                    ));
                }
            }
        } else if let Some(t) = term("data.project") {
            if let Some((a, b)) = time_between(&format!("{}#", esc(&q.ty)), q.from_time, None) {
                for v in &t.values {
                    parts.push(Q::index(
                        "gsi2",
                        project_events_pk(v),
                        Sk::Between(a.clone(), b.clone()),
                    ));
                }
            }
        } else if let Some((a, b)) = time_between("", q.from_time, None) {
            parts.push(Q::index("gsi3", type_pk(&q.ty), Sk::Between(a, b)));
        }
        let mut hits: Vec<Stored> = Vec::new();
        let mut seen = HashSet::new();
        for part in parts {
            // Newest first: the newest `limit` of all partitions are among the
            // newest `limit` of each.
            let mut taken = 0;
            self.query_each(&part.newest_first(), |it| {
                let st = stored(&it)?;
                let ok = q.matches(&st.ev)
                    && st
                        .ev
                        .triggeredid
                        .as_deref()
                        .is_none_or(|t| !invalidated.contains(t));
                if ok && seen.insert(st.ev.id.clone()) {
                    hits.push(st);
                    taken += 1;
                }
                Ok(taken < limit)
            })
            .await?;
        }
        hits.sort_by(newest_first);
        Ok(hits.into_iter().take(limit).map(|st| st.ev).collect())
    }

    async fn purge_events(&self, before: Timestamp) -> StoreResult<u64> {
        let Some((a, b)) = time_between("", None, Some(before)) else {
            return Ok(0);
        };
        let mut victims = Vec::new();
        for ty in self.event_types().await? {
            let q = Q::index("gsi3", type_pk(&ty), Sk::Between(a.clone(), b.clone()));
            for it in self.query_all(&q).await? {
                victims.push(victim(&it)?);
            }
        }
        // The index may still show an id deleted and stored again since: the
        // condition checks the stored event's own time.
        let cond = DeleteIf {
            attr: "time",
            op: "<",
            value: n(before.millis()),
        };
        self.delete_events(victims, cond).await
    }
}
