//! The datastore: [`EventStore`].

use crate::{from_json, pg_opt_text, pg_text, to_i64, Db, Params, PostgresStore};
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{EventStore, StoreResult};
use keelson_core::query::{EventPage, EventQuery, TypeQuery, DEFAULT_PAGE_SIZE};
use keelson_core::timestamp::Timestamp;
use std::collections::BTreeSet;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

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
        return format!("{col} = ANY({}::text[])", p.bind(values));
    }
    let path: Vec<String> = match key {
        "gitcommitid" => vec!["gitcommitid".into()],
        k => match k.strip_prefix("data.") {
            Some(rest) => std::iter::once("data")
                .chain(rest.split('.'))
                .map(String::from)
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
    let values = p.bind(values);
    conds.push(format!(
        "json_typeof({DOC} #> {path}::text[]) IN ('string', 'number', 'boolean') \
         AND {DOC} #>> {path}::text[] = ANY({values}::text[])"
    ));
    format!("({})", conds.join(" AND "))
}

fn type_filter(q: &TypeQuery, p: &mut Params) -> String {
    let mut conds = vec![format!("type = {}::text", p.bind(q.ty.clone()))];
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

/// Deletes the events `cond` (on parameter `$1`) selects and re-elects the
/// root of every context that lost it. The contexts whose roots are about to
/// go are locked first: an insert into one of them would otherwise decide
/// its root against the row being deleted.
pub(crate) async fn delete_events(
    tx: &impl GenericClient,
    cond: &str,
    arg: &(dyn ToSql + Sync),
) -> StoreResult<u64> {
    let doomed_roots = tx
        .query(
            &format!("SELECT DISTINCT shkeptncontext FROM events WHERE {cond} AND is_root"),
            &[arg],
        )
        .await
        .db()?;
    let mut locked = BTreeSet::new();
    for r in &doomed_roots {
        locked.insert(context_key(r.try_get(0).db()?));
    }
    lock_contexts(tx, &locked).await?;
    let row = tx
        .query_one(
            &format!(
                "WITH d AS (DELETE FROM events WHERE {cond} RETURNING shkeptncontext, is_root) \
                 SELECT COUNT(*), array_agg(DISTINCT shkeptncontext) FILTER (WHERE is_root) FROM d"
            ),
            &[arg],
        )
        .await
        .db()?;
    let deleted: i64 = row.try_get(0).db()?;
    let orphaned: Vec<String> = row
        .try_get::<_, Option<Vec<String>>>(1)
        .db()?
        .unwrap_or_default();
    // A root that moved into the deleted range after the first look (an
    // earlier event inserted meanwhile): lock its context now.
    let late: BTreeSet<i64> = orphaned
        .iter()
        .map(|c| context_key(c))
        .filter(|k| !locked.contains(k))
        .collect();
    lock_contexts(tx, &late).await?;
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
        let page_size = if q.page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            q.page_size
        };
        let mut p = Params::default();
        let cond = event_filter(q, &mut p);
        let filter_params = p.0.len();
        let limit = p.bind(to_i64(page_size));
        let offset = p.bind(to_i64(q.offset));
        let client = self.client().await?;
        let page = client
            .prepare_cached(&format!(
                "SELECT id, doc::text FROM events WHERE {cond} \
                 ORDER BY time_ms DESC, seq DESC LIMIT {limit} OFFSET {offset}"
            ))
            .await
            .db()?;
        let events = events_of(&client.query(&page, &p.refs()).await.db()?)?;
        // A short page that is not past the end tells the count without a
        // second query. (The count is a later snapshot than the page: a
        // concurrent insert may be counted and not listed, as in Keptn.)
        let total_count = if events.len() < page_size && (!events.is_empty() || q.offset == 0) {
            q.offset + events.len()
        } else {
            let count = client
                .prepare_cached(&format!("SELECT COUNT(*) FROM events WHERE {cond}"))
                .await
                .db()?;
            let n: i64 = client
                .query_one(&count, &p.refs()[..filter_params])
                .await
                .db()?
                .try_get(0)
                .db()?;
            usize::try_from(n).unwrap_or(0)
        };
        let next = q.offset.saturating_add(page_size);
        Ok(EventPage {
            events,
            next_offset: (next < total_count).then_some(next),
            total_count,
        })
    }

    async fn query_by_type(&self, q: &TypeQuery) -> StoreResult<Vec<KeptnEvent>> {
        let limit = if q.limit == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            q.limit
        };
        let mut p = Params::default();
        let cond = type_filter(q, &mut p);
        let limit = p.bind(to_i64(limit));
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT id, doc::text FROM events WHERE {cond} \
                 ORDER BY time_ms DESC, seq DESC LIMIT {limit}"
            ))
            .await
            .db()?;
        events_of(&client.query(&stmt, &p.refs()).await.db()?)
    }

    async fn purge_events(&self, before: Timestamp) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.db()?;
        let n = delete_events(&*tx, "time_ms < $1::bigint", &before.millis()).await?;
        tx.commit().await.db()?;
        Ok(n)
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
