//! Sequence orchestration state: [`SequenceStore`].
//!
//! Under `PROJECT#<project>`: the lane `LANE#<stage>#<service>` (version,
//! state, the sort keys of its open triggers, and — when it has a next
//! wake-up — the `gsi1` keys `WAKEUP` / `<time>#…` that make it due), the
//! executions `EXEC#<id>`, the open triggers `OPEN#<stage>#<service>#<id>`
//! (in `gsi2` under `OPEN#<type>`) and the pause marks `PAUSE#<ctx>#<stage>`.
//! Applied records are `APPLIED#<consumer>#<cause>` / `APPLIED`, with their
//! effects inline or in `EFFECTS#<i>` chunks of the same partition, indexed by
//! consumer and time in `gsi1` and, for purging, by time in sharded `gsi3`
//! partitions.

use super::io::{
    delete_action, names, put_action, values, Cond, Sk, MAX_ITEM_BYTES, MAX_TRANSACTION_ITEMS, Q,
};
use super::item::{
    b, from_json_bytes, get_b, get_json, get_list_s, get_n, get_s, item, item_size, limit, n,
    opt_n, s, to_json, Item,
};
use super::keys::*;
use super::DynamoStore;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{
    ExecutionFilter, LaneCommit, OpenTriggerFilter, SequenceStore, StoreError, StoreResult,
    Versioned,
};
use keelson_core::sequence::{self, Execution, LaneKey, LaneState};
use keelson_core::timestamp::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Effects up to this size are stored in the applied item itself.
const EFFECTS_INLINE_MAX: usize = 300 * 1024;
/// Size of an effects chunk.
const EFFECTS_CHUNK: usize = 300 * 1024;

fn lane_key(it: &Item) -> StoreResult<LaneKey> {
    Ok(LaneKey::new(
        get_s(it, "project")?,
        get_s(it, "stage")?,
        get_s(it, "service")?,
    ))
}

/// The applied item and its effect chunks.
fn applied_items(
    consumer: &str,
    cause: &str,
    effects: &[KeptnEvent],
    now: Timestamp,
    ttl_secs: Option<i64>,
) -> StoreResult<(Item, Vec<Item>)> {
    let pk = applied_pk(consumer, cause);
    let json = to_json("effects", effects)?;
    let mut it = item([
        ("pk", s(&pk)),
        ("sk", s(APPLIED_SK)),
        ("consumer", s(consumer)),
        ("cause", s(cause)),
        ("at", n(now.millis())),
        ("gsi1pk", s(applied_consumer_pk(consumer))),
        ("gsi1sk", s(format!("{}#{}", time_key(now), esc(cause)))),
        ("gsi3pk", s(applied_shard_pk(consumer, cause))),
        (
            "gsi3sk",
            s(format!(
                "{}#{}#{}",
                time_key(now),
                esc(consumer),
                esc(cause)
            )),
        ),
    ]);
    let expires_at = ttl_secs.map(|ttl| n((now.millis() / 1000).saturating_add(ttl)));
    if let Some(e) = &expires_at {
        it.insert("expires_at".into(), e.clone());
    }
    let mut chunks = Vec::new();
    if json.len() <= EFFECTS_INLINE_MAX {
        it.insert("effects".into(), s(json));
    } else {
        for (i, part) in json.as_bytes().chunks(EFFECTS_CHUNK).enumerate() {
            let mut ch = item([
                ("pk", s(&pk)),
                ("sk", s(effects_sk(i))),
                ("data", b(part.to_vec())),
            ]);
            // The TTL removes a record's chunks with it.
            if let Some(e) = &expires_at {
                ch.insert("expires_at".into(), e.clone());
            }
            chunks.push(ch);
        }
        it.insert("chunks".into(), n(chunks.len()));
    }
    Ok((it, chunks))
}

/// The condition of writing an applied record: none exists (or it expired).
const APPLIED_ABSENT: &str = "attribute_not_exists(pk)";

impl DynamoStore {
    fn ttl_secs(&self) -> Option<i64> {
        self.applied_ttl.map(|d| d.as_secs() as i64)
    }

    /// The effects of an applied item.
    async fn effects_of(&self, it: &Item) -> StoreResult<Vec<KeptnEvent>> {
        if it.contains_key("effects") {
            return get_json(it, "effects");
        }
        let chunks: usize = get_n(it, "chunks")?;
        if chunks == 0 || chunks > MAX_TRANSACTION_ITEMS {
            return Err(super::item::malformed(it, "implausible chunk count"));
        }
        let pk = get_s(it, "pk")?;
        // Only the record's own chunks: a partition may hold stale ones beyond
        // them (an earlier, bigger record whose chunks outlived it).
        let parts = self
            .query_all(&Q::table(
                pk,
                Sk::Between(effects_sk(0), effects_sk(chunks - 1)),
            ))
            .await?;
        if parts.len() != chunks {
            return Err(super::item::malformed(
                it,
                format!("{chunks} effect chunks expected, {} found", parts.len()),
            ));
        }
        let mut bytes = Vec::new();
        for p in &parts {
            bytes.extend_from_slice(get_b(p, "data")?);
        }
        from_json_bytes(it, "effects", &bytes)
    }

    /// Deletes the applied record of an index item of `purge_applied` if it is
    /// still that record and older than `before`; true if it did. A record
    /// with chunks goes in one transaction with them (never a chunk without
    /// its record, nor the reverse).
    async fn purge_one_applied(&self, indexed: &Item, before: Timestamp) -> StoreResult<bool> {
        let pk = get_s(indexed, "pk")?.to_string();
        let at: i64 = get_n(indexed, "at")?;
        // The index lags: the record itself must still be old.
        let Some(chunks) = opt_n::<usize>(indexed, "chunks")? else {
            return Ok(self
                .delete_returning(
                    &pk,
                    APPLIED_SK,
                    Some(Cond::cmp("at", "<", n(before.millis()))),
                )
                .await?
                .is_some());
        };
        // Chunks are at most 300 KiB of a transaction's 4 MB.
        if chunks == 0 || chunks >= MAX_TRANSACTION_ITEMS {
            return Err(super::item::malformed(indexed, "implausible chunk count"));
        }
        // The same record as indexed (same `at`, hence the same chunk count).
        let mut record = delete_action(&pk, APPLIED_SK)?;
        if let Some(d) = record.delete.as_mut() {
            d.condition_expression = Some("#at = :at AND #at < :before".into());
            d.expression_attribute_names = names([("#at", "at")]);
            d.expression_attribute_values =
                values([(":at", n(at)), (":before", n(before.millis()))]);
        }
        let mut actions = vec![record];
        for i in 0..chunks {
            actions.push(delete_action(&pk, &effects_sk(i))?);
        }
        match self.transact(actions).await {
            Ok(()) => Ok(true),
            Err(e) if e.condition_failed(0) => Ok(false),
            Err(e) => Err(e.into_store()),
        }
    }

    async fn applied_item(&self, consumer: &str, cause: &str) -> StoreResult<Option<Item>> {
        self.get(&applied_pk(consumer, cause), APPLIED_SK).await
    }
}

impl SequenceStore for DynamoStore {
    async fn load_lane(&self, key: &LaneKey) -> StoreResult<Option<Versioned<LaneState>>> {
        let Some(it) = self
            .get(
                &project_pk(&key.project),
                &lane_sk(&key.stage, &key.service),
            )
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(Versioned {
            version: get_n(&it, "version")?,
            value: get_json(&it, "state")?,
        }))
    }

    async fn commit_lane(&self, c: LaneCommit<'_>) -> StoreResult<()> {
        let key = c.key;
        let pk = project_pk(&key.project);
        let sk = lane_sk(&key.stage, &key.service);
        let current = self.get(&pk, &sk).await?;
        let version = match &current {
            Some(it) => get_n(it, "version")?,
            None => 0,
        };
        if version != c.expected_version {
            // A replay is AlreadyApplied whatever the version.
            return Err(
                if self.applied_item(c.consumer, c.cause_id).await?.is_some() {
                    StoreError::AlreadyApplied
                } else {
                    StoreError::Conflict
                },
            );
        }
        // Executions unchanged since the version read were written then.
        let mut before: HashMap<String, String> = HashMap::new();
        let mut old_open: Vec<String> = Vec::new();
        if let Some(it) = &current {
            let prev: LaneState = get_json(it, "state")?;
            for e in &prev.executions {
                before.insert(e.id.clone(), to_json("execution", e)?);
            }
            old_open = get_list_s(it, "open")?;
        }

        let state = to_json("lane state", c.state)?;
        let open: Vec<&KeptnEvent> = sequence::open_triggers(c.state);
        let open_sks: Vec<String> = open
            .iter()
            .map(|e| open_sk(&key.stage, &key.service, &e.id))
            .collect();
        let mut lane = item([
            ("pk", s(&pk)),
            ("sk", s(&sk)),
            ("project", s(&key.project)),
            ("stage", s(&key.stage)),
            ("service", s(&key.service)),
            ("version", n(version + 1)),
            ("state", s(state)),
            ("open", AttributeValue::L(open_sks.iter().map(s).collect())),
        ]);
        if let Some(w) = c.next_wakeup {
            lane.insert("wakeup".into(), n(w.millis()));
            lane.insert("gsi1pk".into(), s(WAKEUP_PK));
            lane.insert(
                "gsi1sk".into(),
                s(format!(
                    "{}#{}#{}#{}",
                    time_key(w),
                    esc(&key.project),
                    esc(&key.stage),
                    esc(&key.service)
                )),
            );
        }
        // The whole item (state, open list, keys) must fit, not just the state.
        let lane_size = item_size(&lane);
        if lane_size > MAX_ITEM_BYTES {
            return Err(limit(format!(
                "lane {} is {lane_size} bytes; items hold at most {MAX_ITEM_BYTES}",
                key.id()
            )));
        }
        let mut lane_put = put_action(lane, None)?;
        if let Some(p) = lane_put.put.as_mut() {
            if version == 0 {
                p.condition_expression = Some("attribute_not_exists(pk)".into());
            } else {
                p.condition_expression = Some("#v = :v".into());
                p.expression_attribute_names = names([("#v", "version")]);
                p.expression_attribute_values = values([(":v", n(version))]);
            }
        }

        let (applied, chunks) =
            applied_items(c.consumer, c.cause_id, c.effects, c.now, self.ttl_secs())?;
        let mut actions: Vec<TransactWriteItem> =
            vec![lane_put, put_action(applied, Some(APPLIED_ABSENT))?];
        for ch in chunks {
            actions.push(put_action(ch, None)?);
        }

        // The ended executions win over the lane's (as they are later).
        let mut execs: BTreeMap<&str, &Execution> = BTreeMap::new();
        for e in c.state.executions.iter().chain(c.ended) {
            execs.insert(&e.id, e);
        }
        for e in execs.values() {
            let json = to_json("execution", e)?;
            if before.get(&e.id) == Some(&json) {
                continue;
            }
            let exec = item([
                ("pk", s(&pk)),
                ("sk", s(exec_sk(&e.id))),
                ("ctx", s(&e.keptn_context)),
                ("stage", s(&e.stage)),
                ("service", s(&e.service)),
                ("active", AttributeValue::Bool(!e.state.is_terminal())),
                ("json", s(json)),
            ]);
            let size = item_size(&exec);
            if size > MAX_ITEM_BYTES {
                return Err(limit(format!(
                    "execution {} is {size} bytes; items hold at most {MAX_ITEM_BYTES}",
                    e.id
                )));
            }
            actions.push(put_action(exec, None)?);
        }

        let keep: HashSet<&String> = open_sks.iter().collect();
        for old in old_open.iter().filter(|o| !keep.contains(o)) {
            actions.push(delete_action(&pk, old)?);
        }
        for (ev, osk) in open.iter().zip(&open_sks) {
            actions.push(put_action(
                item([
                    ("pk", s(&pk)),
                    ("sk", s(osk)),
                    ("json", s(ev.to_json())),
                    ("gsi2pk", s(open_type_pk(&ev.ty))),
                    (
                        "gsi2sk",
                        s(format!("{}#{}", time_key(ev.time), esc(&ev.id))),
                    ),
                ]),
                None,
            )?);
        }

        // DynamoDB's limits (100 actions, 4 MB in all) are checked before
        // sending, as a `Limit` error.
        match self.transact(actions).await {
            Ok(()) => Ok(()),
            Err(e) if e.condition_failed(1) => Err(StoreError::AlreadyApplied),
            Err(e) if e.condition_failed(0) || e.conflicted() => Err(StoreError::Conflict),
            Err(e) => Err(e.into_store()),
        }
    }

    async fn record_applied(
        &self,
        consumer: &str,
        cause_id: &str,
        effects: &[KeptnEvent],
        now: Timestamp,
    ) -> StoreResult<bool> {
        let (applied, chunks) = applied_items(consumer, cause_id, effects, now, self.ttl_secs())?;
        if chunks.is_empty() {
            return self.put_if(applied, Cond::absent()).await;
        }
        let mut actions = vec![put_action(applied, Some(APPLIED_ABSENT))?];
        for ch in chunks {
            actions.push(put_action(ch, None)?);
        }
        match self.transact(actions).await {
            Ok(()) => Ok(true),
            Err(e) if e.condition_failed(0) => Ok(false),
            Err(e) if e.conflicted() => Err(StoreError::Conflict),
            Err(e) => Err(e.into_store()),
        }
    }

    async fn recent_effects(&self, consumer: &str, window_ms: i64) -> StoreResult<Vec<KeptnEvent>> {
        let pk = applied_consumer_pk(consumer);
        let mut newest: Option<i64> = None;
        self.query_each(
            &Q::index("gsi1", &pk, Sk::Any).newest_first().page(1),
            |it| {
                newest = Some(get_n(&it, "at")?);
                Ok(false)
            },
        )
        .await?;
        let Some(newest) = newest else {
            return Ok(Vec::new());
        };
        let from = Timestamp::from_millis(newest.saturating_sub(window_ms).saturating_sub(1));
        let Some((a, bnd)) = time_between("", Some(from), None) else {
            return Ok(Vec::new());
        };
        let mut items = self
            .query_all(&Q::index("gsi1", &pk, Sk::Between(a, bnd)))
            .await?;
        let mut keyed = Vec::new();
        for it in items.drain(..) {
            let at: i64 = get_n(&it, "at")?;
            let cause = get_s(&it, "cause")?.to_string();
            keyed.push((at, cause, it));
        }
        keyed.sort_by(|x, y| (x.0, &x.1).cmp(&(y.0, &y.1)));
        let mut out = Vec::new();
        for (_, _, it) in keyed {
            out.extend(self.effects_of(&it).await?);
        }
        Ok(out)
    }

    async fn purge_applied(&self, before: Timestamp) -> StoreResult<u64> {
        let Some((a, bnd)) = time_between("", None, Some(before)) else {
            return Ok(0);
        };
        let mut count = 0;
        for shard in 0..APPLIED_SHARDS {
            let q = Q::index(
                "gsi3",
                format!("APPLIED#{shard}"),
                Sk::Between(a.clone(), bnd.clone()),
            );
            for it in self.query_all(&q).await? {
                if self.purge_one_applied(&it, before).await? {
                    count += 1;
                }
            }
        }
        Ok(count)
    }

    async fn applied_effects(
        &self,
        consumer: &str,
        cause_id: &str,
    ) -> StoreResult<Option<Vec<KeptnEvent>>> {
        match self.applied_item(consumer, cause_id).await? {
            None => Ok(None),
            Some(it) => Ok(Some(self.effects_of(&it).await?)),
        }
    }

    async fn due_lanes(&self, now: Timestamp) -> StoreResult<Vec<LaneKey>> {
        let Some((a, bnd)) = time_between(
            "",
            None,
            Some(Timestamp::from_millis(now.millis().saturating_add(1))),
        ) else {
            return Ok(Vec::new());
        };
        let items = self
            .query_all(&Q::index("gsi1", WAKEUP_PK, Sk::Between(a, bnd)))
            .await?;
        let mut out: BTreeSet<LaneKey> = BTreeSet::new();
        for it in &items {
            out.insert(lane_key(it)?);
        }
        Ok(out.into_iter().collect())
    }

    async fn list_executions(&self, f: &ExecutionFilter) -> StoreResult<Vec<Execution>> {
        let q = Q::table(project_pk(&f.project), Sk::BeginsWith("EXEC#".into()));
        let eq = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        let mut out: Vec<Execution> = Vec::new();
        let mut err = None;
        self.query_each(&q, |it| {
            let keep = eq(&f.keptn_context, get_s(&it, "ctx")?)
                && eq(&f.stage, get_s(&it, "stage")?)
                && eq(&f.service, get_s(&it, "service")?)
                && (!f.active_only || super::item::get_bool(&it, "active")?);
            if keep {
                match get_json(&it, "json") {
                    Ok(e) => out.push(e),
                    Err(e) => err = Some(e),
                }
            }
            Ok(err.is_none())
        })
        .await?;
        if let Some(e) = err {
            return Err(e);
        }
        out.sort_by(|a, b| (a.triggered_at, &a.id).cmp(&(b.triggered_at, &b.id)));
        Ok(out)
    }

    async fn open_triggers(&self, f: &OpenTriggerFilter) -> StoreResult<Vec<KeptnEvent>> {
        let items = self
            .query_all(&Q::index("gsi2", open_type_pk(&f.ty), Sk::Any))
            .await?;
        let eq = |want: &Option<String>, got: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == got)
        };
        let mut out = Vec::new();
        for it in &items {
            let e: KeptnEvent = get_json(it, "json")?;
            if e.ty == f.ty
                && eq(&f.project, e.project())
                && eq(&f.stage, e.stage())
                && eq(&f.service, e.service())
                && eq(&f.event_id, Some(&e.id))
            {
                out.push(e);
            }
        }
        out.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        Ok(out)
    }

    async fn set_paused(
        &self,
        project: &str,
        keptn_context: &str,
        stage: Option<&str>,
        paused: bool,
    ) -> StoreResult<()> {
        let pk = project_pk(project);
        let prefix = pause_prefix(keptn_context);
        let mark = format!("{prefix}{}", esc(stage.unwrap_or_default()));
        match (paused, stage) {
            (true, _) => {
                self.put(item([("pk", s(&pk)), ("sk", s(&mark))])).await?;
            }
            (false, Some(_)) => {
                self.delete_returning(&pk, &mark, None).await?;
            }
            // Resuming a whole context resumes its stages too.
            (false, None) => {
                let items = self
                    .query_all(&Q::table(&pk, Sk::BeginsWith(prefix)))
                    .await?;
                let deletes = items
                    .iter()
                    .map(|it| DynamoStore::delete_request(&pk, get_s(it, "sk")?))
                    .collect::<StoreResult<Vec<_>>>()?;
                self.batch_write(deletes).await?;
            }
        }
        Ok(())
    }

    async fn is_paused(
        &self,
        project: &str,
        keptn_context: &str,
        stage: &str,
    ) -> StoreResult<bool> {
        let prefix = pause_prefix(keptn_context);
        let marks = [prefix.clone(), format!("{prefix}{}", esc(stage))];
        let items = self
            .query_all(&Q::table(project_pk(project), Sk::BeginsWith(prefix)))
            .await?;
        for it in &items {
            if marks
                .iter()
                .any(|m| m == get_s(it, "sk").unwrap_or_default())
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
