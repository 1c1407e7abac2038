//! The datastore: [`EventStore`].

use crate::{from_json, Db, SqliteStore};
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{EventStore, StoreResult, TypeHit};
use keelson_core::query::{EventPage, EventQuery, TypeQuery};
use keelson_core::timestamp::Timestamp;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension, Transaction};

/// A WHERE clause with its arguments.
#[derive(Default)]
struct Where {
    conds: Vec<String>,
    args: Vec<Value>,
}

impl Where {
    fn push(&mut self, cond: impl Into<String>, args: impl IntoIterator<Item = Value>) {
        self.conds.push(cond.into());
        self.args.extend(args);
    }

    fn sql(&self) -> String {
        if self.conds.is_empty() {
            "1".into()
        } else {
            self.conds.join(" AND ")
        }
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn int(n: usize) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The `GET /event` filters. The most selective indexed filter (event id, then
/// context) gets the index: the others are written `+col` so SQLite does not pick them.
fn event_filter(q: &EventQuery) -> Where {
    let mut w = Where::default();
    let mut indexed = false;
    for (col, v) in [("id", &q.event_id), ("shkeptncontext", &q.keptn_context)] {
        if let Some(v) = v {
            let hint = if indexed { "+" } else { "" };
            w.push(format!("{hint}{col} = ?"), [text(v)]);
            indexed = true;
        }
    }
    // Without an id or a context, the planner chooses between type and project.
    let hint = if indexed { "+" } else { "" };
    for (col, v) in [("type", &q.ty), ("project", &q.project)] {
        if let Some(v) = v {
            w.push(format!("{hint}{col} = ?"), [text(v)]);
        }
    }
    for (col, v) in [
        ("stage", &q.stage),
        ("service", &q.service),
        ("source", &q.source),
    ] {
        if let Some(v) = v {
            w.push(format!("{col} = ?"), [text(v)]);
        }
    }
    if let Some(t) = q.from_time {
        w.push("time > ?", [Value::Integer(t.millis())]);
    }
    if let Some(t) = q.before_time {
        w.push("time < ?", [Value::Integer(t.millis())]);
    }
    if q.root {
        w.push("is_root = 1", []);
    }
    w
}

/// `$."a"."b"` for a dotted key, `None` when a segment cannot be quoted.
fn json_path<'a>(segments: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut p = String::from("$");
    for seg in segments {
        if seg.is_empty() || seg.contains('"') {
            return None;
        }
        p.push_str(".\"");
        p.push_str(seg);
        p.push('"');
    }
    Some(p)
}

/// The type-query filter term on `key`, as text compared like `query::field_text`.
fn filter_term(w: &mut Where, key: &str, values: &[String], context_indexed: bool) {
    let placeholders = vec!["?"; values.len()].join(", ");
    let vals = values.iter().map(|v| text(v));
    let column = match key {
        "id" => Some("id"),
        "type" => Some("type"),
        "source" => Some("source"),
        "shkeptncontext" => Some("shkeptncontext"),
        "triggeredid" => Some("triggeredid"),
        "data.project" if context_indexed => Some("+project"),
        "data.project" => Some("project"),
        "data.stage" => Some("stage"),
        "data.service" => Some("service"),
        _ => None,
    };
    if let Some(col) = column {
        w.push(format!("{col} IN ({placeholders})"), vals);
        return;
    }
    if key == "data.result" {
        // The column holds string results; other values, and rows stored
        // before it existed, are compared as read from the JSON.
        let mut args: Vec<Value> = vals.clone().collect();
        args.extend(json_field_args(r#"$."data"."result""#));
        args.extend(vals);
        w.push(
            format!(
                "(result IN ({placeholders}) OR (result IS NULL AND {} IN ({placeholders})))",
                JSON_FIELD_TEXT
            ),
            args,
        );
        return;
    }
    let path = match key {
        "gitcommitid" => json_path(["gitcommitid"]),
        k => k
            .strip_prefix("data.")
            .and_then(|rest| json_path(std::iter::once("data").chain(rest.split('.')))),
    };
    let Some(path) = path else {
        w.push("0", []);
        return;
    };
    w.push(
        format!("{JSON_FIELD_TEXT} IN ({placeholders})"),
        json_field_args(&path).into_iter().chain(vals),
    );
}

/// A JSON field as the text a filter compares with (strings as they are,
/// numbers and booleans as written, anything else NULL); its four
/// parameters are the field's path ([`json_field_args`]).
const JSON_FIELD_TEXT: &str = "(CASE json_type(json, ?) WHEN 'text' THEN json_extract(json, ?) \
     WHEN 'integer' THEN json -> ? WHEN 'real' THEN json -> ? \
     WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' END)";

fn json_field_args(path: &str) -> [Value; 4] {
    [text(path), text(path), text(path), text(path)]
}

/// The type of the events in the partial index `events_evaluations`.
const EVALUATION_FINISHED: &str = crate::evaluations_index_type!();

fn type_filter(q: &TypeQuery) -> Where {
    let mut w = Where::default();
    let by_context = q.filter.iter().any(|t| t.key == "shkeptncontext");
    if by_context {
        w.push("+type = ?", [text(&q.ty)]);
    } else if q.ty == EVALUATION_FINISHED {
        // As a literal: the partial index's condition, which a parameter
        // would not let the planner prove.
        w.push(format!("type = '{EVALUATION_FINISHED}'"), []);
    } else {
        w.push("type = ?", [text(&q.ty)]);
    }

    if let Some(t) = q.from_time {
        w.push("time > ?", [Value::Integer(t.millis())]);
    }
    for t in &q.filter {
        filter_term(&mut w, &t.key, &t.values, by_context);
    }
    if q.exclude_invalidated {
        w.push(
            "(triggeredid IS NULL OR NOT EXISTS (SELECT 1 FROM events i \
             WHERE i.triggeredid = events.triggeredid AND i.type GLOB '*.invalidated'))",
            [],
        );
    }
    w
}

/// A page of `GET /event`, newest first: the order the `(…, time)` indexes give
/// (`seq` is the rowid, the last column of every index).
fn page_sql(cond: &str) -> String {
    format!("SELECT json FROM events WHERE {cond} ORDER BY time DESC, seq DESC LIMIT ? OFFSET ?")
}

/// The type query `w`, newest first, selecting `columns`.
fn type_sql(w: &Where, columns: &str) -> String {
    format!(
        "SELECT {columns} FROM events WHERE {} ORDER BY time DESC, seq DESC LIMIT ?",
        w.sql()
    )
}

fn events_of(tx: &Transaction<'_>, sql: &str, args: Vec<Value>) -> StoreResult<Vec<KeptnEvent>> {
    let mut stmt = tx.prepare_cached(sql).db()?;
    let rows = stmt
        .query_map(params_from_iter(args), |r| r.get::<_, String>(0))
        .db()?;
    let mut out = Vec::new();
    for row in rows {
        out.push(from_json(&row.db()?)?);
    }
    Ok(out)
}

/// Deletes the events `cond` selects and re-elects the root of every context that lost it.
pub(crate) fn delete_events(tx: &Transaction<'_>, cond: &str, arg: Value) -> StoreResult<u64> {
    let orphaned: Vec<String> = {
        let mut stmt = tx
            .prepare_cached(&format!(
                // A context has one root: no DISTINCT, so the partial root indexes serve it.
                "SELECT shkeptncontext FROM events WHERE {cond} AND is_root = 1"
            ))
            .db()?;
        let rows = stmt.query_map([&arg], |r| r.get(0)).db()?;
        rows.collect::<Result<_, _>>().db()?
    };
    let n = tx
        .prepare_cached(&format!("DELETE FROM events WHERE {cond}"))
        .db()?
        .execute([&arg])
        .db()?;
    let mut elect = tx
        .prepare_cached(
            "UPDATE events SET is_root = 1 WHERE seq = \
             (SELECT seq FROM events WHERE shkeptncontext = ?1 ORDER BY time, seq LIMIT 1)",
        )
        .db()?;
    for ctx in orphaned {
        elect.execute([ctx]).db()?;
    }
    Ok(n as u64)
}

/// An event's columns, owned, for a grouped write.
pub(crate) struct EventRow {
    pub(crate) id: String,
    pub(crate) time: i64,
    pub(crate) ty: String,
    pub(crate) project: Option<String>,
    pub(crate) stage: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) context: String,
    pub(crate) triggeredid: Option<String>,
    pub(crate) source: String,
    /// `data.result` when it is a string.
    pub(crate) result: Option<String>,
    pub(crate) json: String,
}

impl EventRow {
    pub(crate) fn of(ev: &KeptnEvent) -> Self {
        Self::with_json(ev, ev.to_json())
    }

    /// [`Self::of`] with the event's JSON already at hand.
    pub(crate) fn with_json(ev: &KeptnEvent, json: String) -> Self {
        EventRow {
            id: ev.id.clone(),
            time: ev.time.millis(),
            ty: ev.ty.clone(),
            project: ev.project().map(str::to_string),
            stage: ev.stage().map(str::to_string),
            service: ev.service().map(str::to_string),
            context: ev.shkeptncontext.clone(),
            triggeredid: ev.triggeredid.clone(),
            source: ev.source.clone(),
            result: ev
                .data
                .get("result")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string),
            json,
        }
    }
}

/// Stores events (a repeated id is ignored) and keeps each context's root
/// marked; returns how many were new.
pub(crate) fn insert_rows(tx: &Transaction<'_>, rows: &[EventRow]) -> StoreResult<usize> {
    Ok(insert_rows_at(tx, rows)?.0)
}

/// [`insert_rows`], also giving the `seq` of each row it stored (`None`
/// for a row whose id was stored before, which is left as it was).
pub(crate) fn insert_rows_at(
    tx: &Transaction<'_>,
    rows: &[EventRow],
) -> StoreResult<(usize, Vec<Option<i64>>)> {
    if rows.is_empty() {
        return Ok((0, Vec::new()));
    }
    let mut root_of = tx
        .prepare_cached(
            "SELECT seq, time FROM events WHERE shkeptncontext = ?1 ORDER BY time, seq LIMIT 1",
        )
        .db()?;
    let mut insert = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO events (id, time, type, project, stage, service, \
                 shkeptncontext, triggeredid, source, is_root, json, result) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .db()?;
    let mut unroot = tx
        .prepare_cached("UPDATE events SET is_root = 0 WHERE seq = ?1")
        .db()?;
    let mut added = 0;
    let mut seqs = Vec::with_capacity(rows.len());
    for ev in rows {
        let root: Option<(i64, i64)> = root_of
            .query_row([&ev.context], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .db()?;
        let is_root = root.is_none_or(|(_, t)| ev.time < t);
        let n = insert
            .execute(params![
                ev.id,
                ev.time,
                ev.ty,
                ev.project,
                ev.stage,
                ev.service,
                ev.context,
                ev.triggeredid,
                ev.source,
                is_root,
                ev.json,
                ev.result,
            ])
            .db()?;
        if n == 0 {
            seqs.push(None);
            continue;
        }
        seqs.push(Some(tx.last_insert_rowid()));
        added += 1;
        if let (true, Some((old, _))) = (is_root, root) {
            unroot.execute([old]).db()?;
        }
    }
    Ok((added, seqs))
}

impl EventStore for SqliteStore {
    async fn insert_events(&self, events: &[KeptnEvent]) -> StoreResult<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        let rows: Vec<EventRow> = events.iter().map(EventRow::of).collect();
        self.write_grouped(move |tx| insert_rows(tx, &rows)).await
    }

    async fn query_events(&self, q: &EventQuery) -> StoreResult<EventPage> {
        let w = event_filter(q);
        let page_size = q.effective_page_size();
        let cond = w.sql();
        self.read_async(|tx| {
            let mut args = w.args.clone();
            args.extend([int(page_size), int(q.offset)]);
            let events = events_of(tx, &page_sql(&cond), args)?;
            // A short page that is not past the end tells the count without a second query.
            let total_count = if events.len() < page_size && (!events.is_empty() || q.offset == 0) {
                q.offset + events.len()
            } else {
                let n: i64 = tx
                    .prepare_cached(&format!("SELECT COUNT(*) FROM events WHERE {cond}"))
                    .db()?
                    .query_row(params_from_iter(w.args.iter()), |r| r.get(0))
                    .db()?;
                usize::try_from(n).unwrap_or(0)
            };
            Ok(EventPage::at(events, q.offset, page_size, total_count))
        })
        .await
    }

    async fn query_by_type(&self, q: &TypeQuery) -> StoreResult<Vec<KeptnEvent>> {
        let w = type_filter(q);
        let limit = q.effective_limit();
        let sql = type_sql(&w, "json");
        let mut args = w.args;
        args.push(int(limit));
        self.read_async(|tx| events_of(tx, &sql, args)).await
    }

    /// The ids from the index first, then (in the same snapshot) the JSON
    /// of the events the caller does not know, each by its id.
    async fn query_by_type_skipping(
        &self,
        q: &TypeQuery,
        known: &(dyn Fn(&str) -> bool + Sync),
    ) -> StoreResult<Vec<TypeHit>> {
        let w = type_filter(q);
        let sql = type_sql(&w, "id");
        let mut args = w.args;
        args.push(int(q.effective_limit()));
        self.read_async(|tx| {
            let ids: Vec<String> = {
                let mut stmt = tx.prepare_cached(&sql).db()?;
                let rows = stmt
                    .query_map(params_from_iter(args), |r| r.get::<_, String>(0))
                    .db()?;
                rows.collect::<Result<_, _>>().db()?
            };
            let mut by_id = tx
                .prepare_cached("SELECT json FROM events WHERE id = ?1")
                .db()?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if known(&id) {
                    out.push(TypeHit::Known(id));
                    continue;
                }
                let json: String = by_id.query_row([&id], |r| r.get(0)).db()?;
                out.push(TypeHit::Event(Box::new(from_json(&json)?)));
            }
            Ok(out)
        })
        .await
    }

    async fn purge_events(&self, before: Timestamp) -> StoreResult<u64> {
        // Events still queued for a consumer (the local bus's queue rows
        // name them instead of copying them) stay until delivered.
        self.write_alone(move |tx| {
            delete_events(
                tx,
                "time < ?1 AND seq NOT IN (SELECT event FROM queue WHERE event IS NOT NULL)",
                Value::Integer(before.millis()),
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_are_quoted_per_segment() {
        assert_eq!(
            json_path(["data", "evaluation", "score-x"]).as_deref(),
            Some(r#"$."data"."evaluation"."score-x""#)
        );
        assert_eq!(json_path(["data", "a\"b"]), None);
        assert_eq!(json_path(["data", ""]), None);
    }

    fn plan(sql: &str, args: usize) -> String {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .read(|tx| {
                let mut stmt = tx.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).db()?;
                let rows = stmt
                    .query_map(params_from_iter(vec![Value::Null; args]), |r| {
                        r.get::<_, String>(3)
                    })
                    .db()?;
                Ok(rows.collect::<Result<Vec<_>, _>>().db()?.join("; "))
            })
            .unwrap()
    }

    #[test]
    fn event_queries_walk_an_index_in_order_without_sorting() {
        let some = |v: &str| Some(v.to_string());
        let cases = [
            (
                EventQuery {
                    keptn_context: some("c"),
                    ty: some("t"),
                    project: some("p"),
                    ..EventQuery::default()
                },
                "events_context",
            ),
            (
                EventQuery {
                    project: some("p"),
                    ..EventQuery::default()
                },
                "events_project",
            ),
            (
                EventQuery {
                    project: some("p"),
                    root: true,
                    ..EventQuery::default()
                },
                "events_root_project",
            ),
            (
                EventQuery {
                    root: true,
                    ..EventQuery::default()
                },
                "events_root_time",
            ),
            (EventQuery::default(), "events_time"),
        ];
        for (q, index) in cases {
            let w = event_filter(&q);
            let p = plan(&page_sql(&w.sql()), w.args.len() + 2);
            assert!(
                p.contains(index) && !p.contains("TEMP B-TREE"),
                "{q:?}: {p}"
            );
        }
        let w = type_filter(&TypeQuery {
            ty: "t".into(),
            filter: keelson_core::query::parse_filter("shkeptncontext:c AND data.project:p")
                .unwrap(),
            exclude_invalidated: true,
            from_time: None,
            limit: 20,
        });
        let p = plan(&type_sql(&w, "json"), w.args.len() + 1);
        assert!(
            p.contains("events_context") && p.contains("events_triggeredid"),
            "{p}"
        );
        // A type query's plan.
        let type_plan = |ty: &str, filter: &str, exclude_invalidated: bool| {
            let w = type_filter(&TypeQuery {
                ty: ty.into(),
                filter: keelson_core::query::parse_filter(filter).unwrap(),
                exclude_invalidated,
                from_time: None,
                limit: 4,
            });
            plan(&type_sql(&w, "json"), w.args.len() + 1)
        };
        // The lighthouse's previous evaluations: one service's events of the
        // type, newest first, without walking the project's other services.
        let p = type_plan(
            "sh.keptn.event.evaluation.finished",
            "data.project:p AND data.stage:s AND data.service:svc AND data.result:pass,warning",
            true,
        );
        assert!(
            p.contains("events_evaluations") && !p.contains("TEMP B-TREE"),
            "{p}"
        );
        // Invalidations are looked for in the index alone.
        assert!(p.contains("COVERING INDEX events_triggeredid"), "{p}");
        // Other types, scoped the same way, walk an index newest first.
        let p = type_plan(
            "sh.keptn.event.deployment.finished",
            "data.project:p AND data.stage:s AND data.service:svc",
            false,
        );
        assert!(
            !p.contains("events_evaluations") && !p.contains("TEMP B-TREE"),
            "{p}"
        );
    }
}
