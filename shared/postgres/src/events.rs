//! The datastore: [`EventStore`].

use crate::{from_json, pg_opt_text, pg_text, to_i64, Db, Params, PostgresStore};
use deadpool_postgres::Object;
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{EventStore, StoreResult};
use keelson_core::query::{EventPage, EventQuery, TypeQuery};
use keelson_core::timestamp::Timestamp;
use std::collections::BTreeSet;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{GenericClient, Row};

/// `total_count` of a page is exact up to this many matches, and a lower
/// bound beyond (but always past the page's end, so `next_offset` is still
/// right). Counting every match of a broad filter over a long history would
/// cost every full page a scan of it; Keptn's UI only shows the number.
/// The SQLite store counts exactly; the conformance suite stays far below.
pub(crate) const COUNT_CAP: usize = 100_000;

/// The `GET /event` filters, ANDed.
fn event_filter(q: &EventQuery, p: &mut Params) -> String {
    let mut conds = Vec::new();
    for (col, v) in [
        ("id", &q.event_id),
        ("shkeptncontext", &q.keptn_context),
        ("type", &q.ty),
        ("project", &q.project),
        ("stage", &q.stage),
        ("service", &q.service),
        ("source", &q.source),
    ] {
        if let Some(v) = v {
            conds.push(format!("{col} = {}::text", p.bind(pg_text(v))));
        }
    }
    if let Some(t) = q.from_time {
        conds.push(format!("time_ms > {}::bigint", p.bind(t.millis())));
    }
    if let Some(t) = q.before_time {
        conds.push(format!("time_ms < {}::bigint", p.bind(t.millis())));
    }
    if q.root {
        conds.push("is_root".into());
    }
    and(conds)
}

fn and(conds: Vec<String>) -> String {
    if conds.is_empty() {
        "TRUE".into()
    } else {
        conds.join(" AND ")
    }
}

/// The event document for path lookups. PostgreSQL's path operators on
/// `json` fail on a document with an escaped NUL anywhere in it ("unsupported
/// Unicode escape sequence"): one such event would break every type query
/// that reads it, so those documents are looked into with U+FFFD instead.
const DOC: &str = "(CASE WHEN strpos(doc::text, '\\u0000') > 0 \
                   THEN replace(doc::text, '\\u0000', '\\ufffd')::json ELSE doc END)";

/// `expr` equal to one of `values`. One value is compared with `=`, so an
/// index on `expr` (`events_type_scope` for type, project, stage, service)
/// can also deliver the rows in its order; `= ANY(array)` cannot.
fn any_of(expr: &str, values: Vec<String>, p: &mut Params) -> String {
    match <[String; 1]>::try_from(values) {
        Ok([v]) => format!("{expr} = {}::text", p.bind(v)),
        Err(values) => format!("{expr} = ANY({}::text[])", p.bind(values)),
    }
}

/// The type-query filter term on `key`: any of `values`, compared as text
/// like `query::field_text` (numbers and booleans as their JSON text).
fn filter_term(key: &str, values: &[String], p: &mut Params) -> String {
    let values: Vec<String> = values.iter().map(|v| pg_text(v)).collect();
    let column = match key {
        "id" | "type" | "source" | "shkeptncontext" | "triggeredid" => Some(key),
        "data.project" => Some("project"),
        "data.stage" => Some("stage"),
        "data.service" => Some("service"),
        _ => None,
    };
    if let Some(col) = column {
        return any_of(col, values, p);
    }
    // Path steps go through `pg_text` as the values do: [`DOC`] shows a
    // document's NUL as U+FFFD in its keys too.
    let path: Vec<String> = match key {
        "gitcommitid" => vec!["gitcommitid".into()],
        k => match k.strip_prefix("data.") {
            Some(rest) => std::iter::once("data")
                .chain(rest.split('.'))
                .map(pg_text)
                .collect(),
            // Other attributes are not queryable (as in every store).
            None => return "FALSE".into(),
        },
    };
    let mut conds = Vec::new();
    // PostgreSQL reads a numeric path step as an index into an array; the
    // other stores only ever look keys up in objects.
    for (i, seg) in path.iter().enumerate().skip(1) {
        if seg.bytes().any(|b| b.is_ascii_digit()) {
            let parent = p.bind(path[..i].to_vec());
            conds.push(format!("json_typeof({DOC} #> {parent}::text[]) = 'object'"));
        }
    }
    let path = p.bind(path);
    let matches = any_of(&format!("{DOC} #>> {path}::text[]"), values, p);
    conds.push(format!(
        "json_typeof({DOC} #> {path}::text[]) IN ('string', 'number', 'boolean') AND {matches}"
    ));
    format!("({})", conds.join(" AND "))
}

fn type_filter(q: &TypeQuery, p: &mut Params) -> String {
    let mut conds = vec![format!("type = {}::text", p.bind(pg_text(&q.ty)))];
    if let Some(t) = q.from_time {
        conds.push(format!("time_ms > {}::bigint", p.bind(t.millis())));
    }
    for t in &q.filter {
        conds.push(filter_term(&t.key, &t.values, p));
    }
    if q.exclude_invalidated {
        conds.push(
            "(triggeredid IS NULL OR NOT EXISTS (SELECT 1 FROM events i \
             WHERE i.triggeredid = events.triggeredid AND i.type LIKE '%.invalidated'))"
                .into(),
        );
    }
    and(conds)
}

/// Decodes `(id, doc::text)` rows.
fn events_of(rows: &[Row]) -> StoreResult<Vec<KeptnEvent>> {
    rows.iter()
        .map(|r| {
            let id: &str = r.try_get(0).db()?;
            let doc: &str = r.try_get(1).db()?;
            Ok(from_json(|| format!("event {id:?}"), doc)?)
        })
        .collect()
}

/// Advisory-lock key of a context (FNV-1a): stable across processes and
/// builds, so every replica locks the same key for the same context.
fn context_key(ctx: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ctx.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Takes the advisory locks of `keys` until the transaction ends, in
/// ascending order so that two writers never wait on each other in a cycle.
async fn lock_contexts(tx: &impl GenericClient, keys: &BTreeSet<i64>) -> StoreResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let keys: Vec<i64> = keys.iter().copied().collect();
    tx.execute(
        "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k",
        &[&keys],
    )
    .await
    .db()?;
    Ok(())
}

/// Contexts one transaction deletes events from at most. Each costs an
/// advisory lock until commit, and those live in the server's shared lock
/// table (about `max_locks_per_transaction × max_connections` entries for
/// all sessions together): thousands at once fail with "out of shared
/// memory" (53200), which no retry gets past, and starve other sessions.
pub(crate) const CONTEXTS_PER_TRANSACTION: usize = 200;

/// Up to `limit` contexts with events that `cond` (on parameter `$1`)
/// selects, in order, after `after`.
async fn contexts_with(
    tx: &impl GenericClient,
    cond: &str,
    arg: &(dyn ToSql + Sync),
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<String>> {
    let limit = to_i64(limit);
    let rows = match after {
        None => {
            tx.query(
                &format!(
                    "SELECT DISTINCT shkeptncontext FROM events WHERE {cond} \
                     ORDER BY shkeptncontext LIMIT $2::bigint"
                ),
                &[arg, &limit],
            )
            .await
        }
        Some(after) => {
            tx.query(
                &format!(
                    "SELECT DISTINCT shkeptncontext FROM events \
                     WHERE {cond} AND shkeptncontext > $2::text \
                     ORDER BY shkeptncontext LIMIT $3::bigint"
                ),
                &[arg, &after, &limit],
            )
            .await
        }
    }
    .db()?;
    rows.iter().map(|r| r.try_get(0).db()).collect()
}

/// Deletes, in `contexts` only, the events `cond` (on parameter `$1`)
/// selects, and re-elects the root of every context that lost it. The
/// contexts are all locked first, in ascending key order (as inserts lock
/// theirs): an insert into one of them would otherwise decide its root
/// against a row being deleted. Since nothing outside the locked set is
/// deleted, no lock is needed later (a later lock, out of order, is how
/// two such writers deadlock).
async fn delete_in_contexts(
    tx: &impl GenericClient,
    cond: &str,
    arg: &(dyn ToSql + Sync),
    contexts: &[String],
) -> StoreResult<u64> {
    if contexts.is_empty() {
        return Ok(0);
    }
    let keys = contexts.iter().map(|c| context_key(c)).collect();
    lock_contexts(tx, &keys).await?;
    let row = tx
        .query_one(
            &format!(
                "WITH d AS ( \
                     DELETE FROM events WHERE {cond} AND shkeptncontext = ANY($2::text[]) \
                     RETURNING shkeptncontext, is_root \
                 ) \
                 SELECT COUNT(*), array_agg(DISTINCT shkeptncontext) FILTER (WHERE is_root) FROM d"
            ),
            &[arg, &contexts],
        )
        .await
        .db()?;
    let deleted: i64 = row.try_get(0).db()?;
    let orphaned: Vec<String> = row
        .try_get::<_, Option<Vec<String>>>(1)
        .db()?
        .unwrap_or_default();
    if !orphaned.is_empty() {
        tx.execute(
            "UPDATE events e SET is_root = TRUE FROM ( \
                 SELECT DISTINCT ON (shkeptncontext) seq FROM events \
                 WHERE shkeptncontext = ANY($1::text[]) ORDER BY shkeptncontext, time_ms, seq \
             ) r WHERE e.seq = r.seq",
            &[&orphaned],
        )
        .await
        .db()?;
    }
    Ok(deleted.max(0) as u64)
}

/// Deletes, in `tx`, the events `cond` (on parameter `$1`) selects, if they
/// are in at most [`CONTEXTS_PER_TRANSACTION`] contexts; `None` (and
/// nothing deleted) if they are in more.
pub(crate) async fn delete_events_if_few(
    tx: &impl GenericClient,
    cond: &str,
    arg: &(dyn ToSql + Sync),
) -> StoreResult<Option<u64>> {
    let contexts = contexts_with(tx, cond, arg, None, CONTEXTS_PER_TRANSACTION + 1).await?;
    if contexts.len() > CONTEXTS_PER_TRANSACTION {
        return Ok(None);
    }
    delete_in_contexts(tx, cond, arg, &contexts).await.map(Some)
}

/// Deletes the events `cond` (on parameter `$1`) selects, in transactions
/// of [`CONTEXTS_PER_TRANSACTION`] contexts each, walking the contexts in
/// order. An event that a concurrent writer adds to a context already
/// walked is left for the next deletion (a purge is repeated anyway).
pub(crate) async fn delete_events_in_batches(
    client: &mut Object,
    cond: &str,
    arg: &(dyn ToSql + Sync),
) -> StoreResult<u64> {
    let mut deleted = 0;
    let mut after: Option<String> = None;
    loop {
        let tx = client.transaction().await.db()?;
        let contexts =
            contexts_with(&*tx, cond, arg, after.as_deref(), CONTEXTS_PER_TRANSACTION).await?;
        deleted += delete_in_contexts(&*tx, cond, arg, &contexts).await?;
        tx.commit().await.db()?;
        if contexts.len() < CONTEXTS_PER_TRANSACTION {
            return Ok(deleted);
        }
        after = contexts.last().cloned();
    }
}

/// Inserts one event unless its id is stored, as the root of its context
/// when it is earlier than the current root (which then stops being it).
/// One statement: its parts share one snapshot, taken after the caller
/// locked the context.
const INSERT_EVENT: &str = "\
    WITH root AS ( \
        SELECT seq, time_ms FROM events WHERE shkeptncontext = $7::text \
        ORDER BY time_ms, seq LIMIT 1 \
    ), ins AS ( \
        INSERT INTO events (id, time_ms, type, project, stage, service, shkeptncontext, \
                            triggeredid, source, is_root, doc) \
        SELECT $1::text, $2::bigint, $3::text, $4::text, $5::text, $6::text, $7::text, \
               $8::text, $9::text, NOT EXISTS (SELECT 1 FROM root WHERE root.time_ms <= $2::bigint), \
               $10::text::json \
        ON CONFLICT (id) DO NOTHING \
        RETURNING is_root \
    ), unroot AS ( \
        UPDATE events SET is_root = FALSE \
        WHERE seq = (SELECT seq FROM root) AND EXISTS (SELECT 1 FROM ins WHERE ins.is_root) \
    ) \
    SELECT COUNT(*) FROM ins";

impl EventStore for PostgresStore {
    async fn insert_events(&self, events: &[KeptnEvent]) -> StoreResult<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.db()?;
        let keys = events
            .iter()
            .map(|e| context_key(&pg_text(&e.shkeptncontext)))
            .collect();
        lock_contexts(&*tx, &keys).await?;
        let insert = tx.prepare_cached(INSERT_EVENT).await.db()?;
        let mut added = 0;
        for ev in events {
            let json = ev.to_json();
            let text = |s: &str| pg_text(s);
            let row = tx
                .query_one(
                    &insert,
                    &[
                        &text(&ev.id),
                        &ev.time.millis(),
                        &text(&ev.ty),
                        &pg_opt_text(ev.project()),
                        &pg_opt_text(ev.stage()),
                        &pg_opt_text(ev.service()),
                        &text(&ev.shkeptncontext),
                        &pg_opt_text(ev.triggeredid.as_deref()),
                        &text(&ev.source),
                        &json,
                    ],
                )
                .await
                .db()?;
            let n: i64 = row.try_get(0).db()?;
            added += usize::from(n > 0);
        }
        tx.commit().await.db()?;
        Ok(added)
    }

    async fn query_events(&self, q: &EventQuery) -> StoreResult<EventPage> {
        let page_size = q.effective_page_size();
        let mut p = Params::default();
        let cond = event_filter(q, &mut p);
        let filter_params = p.0.len();
        let limit = p.bind(to_i64(page_size));
        let offset = p.bind(to_i64(q.offset));
        let client = self.client().await?;
        // Statements built from the filters run unnamed: a cached one per
        // combination would pile up on every pooled connection.
        let page = format!(
            "SELECT id, doc::text FROM events WHERE {cond} \
             ORDER BY time_ms DESC, seq DESC LIMIT {limit} OFFSET {offset}"
        );
        let events = events_of(&client.query_typed(&page, &p.typed()).await.db()?)?;
        // A short page that is not past the end tells the count without a
        // second query. (The count is a later snapshot than the page: a
        // concurrent insert may be counted and not listed, as in Keptn.)
        let total_count = if events.len() < page_size && (!events.is_empty() || q.offset == 0) {
            q.offset + events.len()
        } else {
            // Counted up to a cap (see COUNT_CAP), and always past this
            // page's end, so that `next_offset` is right.
            let cap = COUNT_CAP.max(q.offset.saturating_add(page_size).saturating_add(1));
            let cap_param = to_i64(cap);
            let mut filter = p.typed();
            filter.truncate(filter_params);
            filter.push((&cap_param, Type::INT8));
            let n: i64 = client
                .query_typed_one(
                    &format!(
                        "SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE {cond} LIMIT ${}) t",
                        filter_params + 1
                    ),
                    &filter,
                )
                .await
                .db()?
                .try_get(0)
                .db()?;
            usize::try_from(n).unwrap_or(0)
        };
        Ok(EventPage::at(events, q.offset, page_size, total_count))
    }

    async fn query_by_type(&self, q: &TypeQuery) -> StoreResult<Vec<KeptnEvent>> {
        let limit = q.effective_limit();
        let mut p = Params::default();
        let cond = type_filter(q, &mut p);
        let limit = p.bind(to_i64(limit));
        let client = self.client().await?;
        // Unnamed: the text varies with the caller's filter terms, without
        // bound, and the statement cache never forgets one.
        let sql = format!(
            "SELECT id, doc::text FROM events WHERE {cond} \
             ORDER BY time_ms DESC, seq DESC LIMIT {limit}"
        );
        events_of(&client.query_typed(&sql, &p.typed()).await.db()?)
    }

    async fn purge_events(&self, before: Timestamp) -> StoreResult<u64> {
        let mut client = self.client().await?;
        delete_events_in_batches(&mut client, "time_ms < $1::bigint", &before.millis()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keys_are_fnv1a() {
        // Reference values of 64-bit FNV-1a: replicas of every build must agree.
        assert_eq!(context_key("") as u64, 0xcbf2_9ce4_8422_2325);
        assert_eq!(context_key("a") as u64, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(context_key("foobar") as u64, 0x8594_4171_f739_67e8);
    }

    #[test]
    fn one_value_is_compared_with_equals_and_several_with_any() {
        let one = ["p".to_string()];
        let two = ["p".to_string(), "q".to_string()];
        let mut p = Params::default();
        assert_eq!(
            filter_term("data.project", &one, &mut p),
            "project = $1::text"
        );
        assert_eq!(
            filter_term("data.stage", &two, &mut p),
            "stage = ANY($2::text[])"
        );
        let mut p = Params::default();
        let sql = filter_term("data.result", &one, &mut p);
        assert!(sql.ends_with("#>> $1::text[] = $2::text)"), "{sql}");
        let mut p = Params::default();
        let sql = filter_term("data.result", &two, &mut p);
        assert!(sql.ends_with("#>> $1::text[] = ANY($2::text[]))"), "{sql}");
    }

    /// A fresh, migrated store whose pool has one connection, so that every
    /// call uses (and leaves its statements on) the same one.
    async fn one_connection_store() -> PostgresStore {
        let url = crate::testing::fresh_database().await;
        PostgresStore::connect_with_pool_size(&url, 1)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn queries_built_from_filters_leave_no_statements_in_the_cache() {
        use keelson_core::query::FilterTerm;
        let s = one_connection_store().await;
        let cached = || async { s.client().await.unwrap().statement_cache.size() };
        let before = cached().await;
        for n in 0..6 {
            let filter = (0..n)
                .map(|i| FilterTerm {
                    key: format!("data.k{i}.x"),
                    values: (0..=i).map(|v| v.to_string()).collect(),
                })
                .collect();
            let q = TypeQuery {
                ty: "sh.keptn.event.t".into(),
                filter,
                exclude_invalidated: n % 2 == 0,
                from_time: None,
                limit: 10,
            };
            assert!(s.query_by_type(&q).await.unwrap().is_empty());
            let q = EventQuery {
                project: (n > 1).then(|| "p".to_string()),
                stage: (n > 3).then(|| "s".to_string()),
                root: n % 2 == 1,
                ..EventQuery::default()
            };
            assert!(s.query_events(&q).await.unwrap().events.is_empty());
        }
        assert_eq!(cached().await, before);
    }

    #[tokio::test]
    async fn total_count_is_capped_but_next_offset_stays_right() {
        let s = one_connection_store().await;
        let seed = KeptnEvent::new(
            "seed".into(),
            "test",
            "sh.keptn.event.t".into(),
            "c",
            serde_json::json!({"project": "p"}),
            Timestamp::from_millis(1),
        );
        s.insert_events(&[seed]).await.unwrap();
        {
            let client = s.client().await.unwrap();
            client
                .execute(
                    "INSERT INTO events (id, time_ms, type, project, shkeptncontext, source, doc) \
                     SELECT 'e' || i, i, type, project, shkeptncontext, source, doc \
                     FROM events, generate_series(1, $1::bigint) AS i WHERE id = 'seed'",
                    &[&to_i64(COUNT_CAP + 10)],
                )
                .await
                .unwrap();
        }
        let page = |offset: usize| EventQuery {
            project: Some("p".into()),
            offset,
            page_size: 10,
            ..EventQuery::default()
        };
        let first = s.query_events(&page(0)).await.unwrap();
        assert_eq!(first.events.len(), 10);
        assert_eq!(
            (first.total_count, first.next_offset),
            (COUNT_CAP, Some(10))
        );
        // Beyond the cap the count still reaches past the page.
        let deep = s.query_events(&page(COUNT_CAP - 5)).await.unwrap();
        assert_eq!(deep.events.len(), 10);
        assert_eq!(
            (deep.total_count, deep.next_offset),
            (COUNT_CAP + 6, Some(COUNT_CAP + 5))
        );
        let last = s.query_events(&page(COUNT_CAP + 5)).await.unwrap();
        assert_eq!((last.total_count, last.next_offset), (COUNT_CAP + 11, None));
    }

    #[test]
    fn numeric_path_steps_require_an_object_parent() {
        let mut p = Params::default();
        let sql = filter_term("data.list.0", &["a".into()], &mut p);
        assert!(sql.contains("= 'object'"), "{sql}");
        let mut p = Params::default();
        let sql = filter_term("data.evaluation.score", &["1".into()], &mut p);
        assert!(!sql.contains("= 'object'"), "{sql}");
        let mut p = Params::default();
        assert_eq!(filter_term("specversion", &["1.0".into()], &mut p), "FALSE");
    }
}
